"""Joining the cluster: `NodeJoined` once per node id, `NodeRejoined` on every later start.

A node id with nothing in the log yet needs a valid join token, whose role it takes (admission.py).
"Once" is a compare-and-set on the node's subjects (expect nothing there yet), so two starts racing
with the same id, or a retry after a lost acknowledgement, cannot both join: the loser rejoins.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import msgspec

from schemas.events import NodeJoined, NodeRejoined
from services.agent.admission import current_cluster, read_token_file, role_for
from services.agent.identity import Identity
from services.kernel import subjects
from services.kernel.eventlog import Conflict, EventLog, LogUnavailable
from services.kernel.state import ClusterState
from services.kernel.writer import Intent, Writer

log = logging.getLogger(__name__)

_NO_STATE = ClusterState()
"""Node subjects are named from the event alone; the writer needs no view of the cluster."""


async def join(eventlog: EventLog, nodes: Sequence[Identity], token: str = "", token_file: Path | None = None) -> None:
    """Announce every node, waiting for the log if it is unavailable (an agent is useless without it);
    `JoinRefused` if a new node's token (`token`, else the one in `token_file`, read only if a node
    is new) is not one of the cluster's current tokens."""
    delay = 0.1
    while True:
        try:
            await _join_once(eventlog, await admitted(eventlog, nodes, token, token_file))
            return
        except LogUnavailable as e:
            log.warning("cannot join yet, retrying", extra={"error": str(e), "retry_s": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def admitted(eventlog: EventLog, nodes: Sequence[Identity], token: str,
                   token_file: Path | None = None) -> list[Identity]:
    """The nodes with the role their token gives; known nodes as they are (they rejoin)."""
    seen = await _last_seqs(eventlog, [subjects.node_all(n.node_id) for n in nodes])
    if all(seen):
        return list(nodes)
    if not token and token_file is not None:
        token = await read_token_file(token_file)
    role = role_for(await current_cluster(eventlog), token)
    return [n if last else _with_role(n, role) for n, last in zip(nodes, seen, strict=True)]


async def _last_seqs(eventlog: EventLog, filters: list[str], at_once: int = 100) -> list[int]:
    """A sim agent may host thousands of nodes: ask about them in bounded batches, not all at once."""
    out: list[int] = []
    for i in range(0, len(filters), at_once):
        out += await asyncio.gather(*(eventlog.last_seq(f) for f in filters[i:i + at_once]))
    return out


def _with_role(node: Identity, role: str) -> Identity:
    return dataclasses.replace(node, spec=msgspec.structs.replace(node.spec, role=role))


async def _join_once(eventlog: EventLog, nodes: Sequence[Identity]) -> None:
    writers = {n.node_id: Writer(eventlog, actor=f"agent:{n.node_id}") for n in nodes}
    joins = [
        Intent(NodeJoined(node_id=n.node_id, spec=n.spec, description=n.description, addr=n.addr),
               expect_seq=0, expect_subject=subjects.node_all(n.node_id))
        for n in nodes
    ]
    results = await asyncio.gather(
        *(writers[n.node_id].append([i], _NO_STATE) for n, i in zip(nodes, joins, strict=True))
    )
    known = [n for n, r in zip(nodes, results, strict=True) if isinstance(r[0], Conflict)]
    await asyncio.gather(*(
        writers[n.node_id].append([Intent(NodeRejoined(node_id=n.node_id, description=n.description, addr=n.addr))],
                                  _NO_STATE)
        for n in known
    ))
    log.info("joined", extra={"nodes": len(nodes) - len(known), "rejoined": len(known),
                              "node_id": nodes[0].node_id if nodes else ""})
