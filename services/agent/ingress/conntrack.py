"""The connections the kernel forwards for the mesh, as conntrack keeps them (pure): how many are
open (`conntrack -L`, `established_on`), which the rules' counters cannot say since nothing counts a
connection's end; and which to forget when a backend leaves (`conntrack -D`, `forget`).

A line of `conntrack -L` gives the original direction first (`src=`, `dst=`, `sport=`, `dport=`: the
client's view, the node's address and published port) and the reply direction after (the backend's).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from services.agent.ingress.table import Table
from services.kernel.ports import TCP

Endpoint = tuple[str, str, int]
"""(protocol, address, port) of a backend."""
NONE_DELETED = ": 0 flow entries have been deleted"
"""What `conntrack -D` says, exiting 1, when nothing matched."""


def established_on(addr: str) -> list[str]:
    """`conntrack -L` arguments for the open TCP connections DNATed from `addr` (their original
    destination): what `established` counts, of one node address."""
    return ["-L", "-p", TCP, "--dst-nat", "--state", "ESTABLISHED", "--orig-dst", addr]


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


def departed(before: Table, after: Table) -> list[Endpoint]:
    """The backends some route had and none has now."""
    def endpoints(table: Table) -> set[Endpoint]:
        return {(route.protocol, b.addr, b.port) for route in table.values() for b in route.backends}
    return sorted(endpoints(before) - endpoints(after))


def forget(endpoint: Endpoint) -> list[str]:
    """`conntrack -D` arguments for what was DNATed to a backend that left: TCP connections it never
    answered (a SYN to a node that went down), whose client's next SYN would otherwise follow the
    same entry to the same backend until the client gives up; and UDP flows, whose client's next
    datagram then picks a backend still there. Open TCP connections are kept: a backend leaving
    (scaled down, drained) finishes what it serves."""
    protocol, addr, port = endpoint
    state = ["--state", "SYN_SENT"] if protocol == TCP else []
    return ["-D", "-p", protocol, "--dst-nat", "--reply-src", addr, "--reply-port-src", str(port), *state]
