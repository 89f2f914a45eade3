"""The connections the kernel forwards for the mesh, from `conntrack -L` (pure): what the rules'
counters cannot say, since nothing counts a connection's end.

A line of `conntrack -L` gives the original direction first (`src=`, `dst=`, `sport=`, `dport=`: the
client's view, the node's address and published port) and the reply direction after (the backend's).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from services.agent.ingress.table import Table
from services.kernel.ports import TCP


def established(listing: str, addrs: Sequence[str], table: Table) -> Counter[str]:
    """Per service, the TCP connections in `listing` made to one of the node's addresses on one of
    its published ports: those this node's rules forward (another agent's on the same host have
    other addresses)."""
    mine = set(addrs)
    out: Counter[str] = Counter()
    for line in listing.splitlines():
        words = line.split()
        if not words or words[0] != TCP:
            continue
        dst = next((w.removeprefix("dst=") for w in words if w.startswith("dst=")), None)
        dport = next((w.removeprefix("dport=") for w in words if w.startswith("dport=")), "")
        route = table.get((TCP, int(dport))) if dport.isdigit() else None
        if dst in mine and route is not None:
            out[route.service_name] += 1
    return out
