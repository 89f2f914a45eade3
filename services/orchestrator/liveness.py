"""Node liveness: agents heartbeat on core NATS; a node silent for longer than its grace is `down`,
and `ready` again once it is heard from (swarm-behaviour 2.7, with a 1 s period instead of 5 s).

Heartbeats are not in the log, so who was heard when lives only in this process. A process that just
started (or just became leader) starts every node's timer fresh rather than declaring the whole
cluster dead: it has simply not listened yet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgspec

from schemas.events import NodeStatusChanged
from schemas.heartbeat import Heartbeat
from schemas.node import Node
from services.kernel import subjects
from services.kernel.reconcile import Decision, Timer
from services.kernel.state import ClusterState
from services.kernel.writer import Intent
from services.orchestrator.metrics import HEARTBEATS, HEARTBEATS_UNREADABLE
from services.orchestrator.nodes import DOWN, READY

log = logging.getLogger(__name__)

HEARTBEATS_SUBJECT = subjects.heartbeat(">")
MISSED_PERIODS = 3
DOWN_MESSAGE = "heartbeat failure"
_NS = 1_000_000_000
_decode = msgspec.json.Decoder(Heartbeat).decode


@dataclass(frozen=True, slots=True)
class Seen:
    at_ns: int
    grace_ns: int


class Liveness:
    """Remembers when each node was last heard from; `decide` turns that into node status events."""

    def __init__(self, started_ns: int, grace_s: float | None = None, default_period_s: float = 1.0) -> None:
        self.started_ns = started_ns
        self.grace_s = grace_s
        """Fixed grace; None means MISSED_PERIODS times the period each agent announces."""
        self.default = Seen(started_ns, self._grace_ns(default_period_s))
        self.seen: dict[str, Seen] = {}

    def restart(self, now_ns: int) -> None:
        """A new leader counts every node's silence from now: what it heard while standing by may
        be stale (it may have been cut off itself), and declaring nodes down on that is worse."""
        self.started_ns = now_ns
        self.default = Seen(now_ns, self.default.grace_ns)
        self.seen.clear()

    def _grace_ns(self, period_s: float) -> int:
        return int((self.grace_s if self.grace_s is not None else MISSED_PERIODS * period_s) * _NS)

    def observe(self, data: bytes, now_ns: int) -> list[str]:
        """Record one heartbeat message; the node ids it speaks for (none if it is unreadable)."""
        try:
            beat = _decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            HEARTBEATS_UNREADABLE.inc()
            log.warning("unreadable heartbeat", extra={"error": str(e)})
            return []
        HEARTBEATS.inc()
        seen = Seen(now_ns, self._grace_ns(beat.period))
        for node_id in beat.nodes:
            self.seen[node_id] = seen
        return beat.nodes

    def period_ns(self, state: ClusterState) -> int:
        """The heartbeat period failure is measured in: the longest grace among the cluster's nodes
        (a fixed grace, or 3 of the period each agent announces) over the periods a node may miss."""
        graces = (self.seen[n].grace_ns for n in state.nodes if n in self.seen)
        return max(graces, default=self.default.grace_ns) // MISSED_PERIODS

    def decide(self, state: ClusterState, services: set[str], nodes: set[str], now_ns: int) -> Decision:
        return node_status(state, self.seen, self.default, now_ns)


def node_status(state: ClusterState, seen: dict[str, Seen], default: Seen, now_ns: int) -> Decision:
    """Pure: `down` for nodes silent past their grace, `ready` for down nodes heard from since, and a
    timer for the next deadline. Never-heard nodes count from `default` (the listener's start)."""
    out = Decision()
    next_deadline: int | None = None
    for node in state.nodes.values():
        heard = seen.get(node.id)
        last = heard or default
        deadline = last.at_ns + last.grace_ns
        down = node.status.state == DOWN
        if now_ns >= deadline:
            if not down:
                out.intents.append(_status(node, DOWN, DOWN_MESSAGE))
        elif down:
            if heard is not None:
                out.intents.append(_status(node, READY, ""))
        else:
            next_deadline = deadline if next_deadline is None else min(next_deadline, deadline)
    if next_deadline is not None:
        out.timers.append(Timer(next_deadline))
    return out


def _status(node: Node, state: str, message: str) -> Intent:
    return Intent(NodeStatusChanged(node_id=node.id, state=state, message=message),
                  expect_seq=node.version.index, expect_subject=subjects.node_all(node.id))
