"""Node liveness: agents heartbeat on core NATS; a node silent for longer than its grace is `down`,
and `ready` again once it is heard from (swarm-behaviour 2.7, with a 1 s period instead of 5 s).

Heartbeats are not in the log, so who was heard when lives only in this process. A process that just
started (or just became leader) starts every node's timer fresh rather than declaring the whole
cluster dead: it has simply not listened yet. A node it heard while standing by keeps the grace its
agent announced; one it never heard speaks at a period it does not know, so until heard it has the
grace of the period the log records (the agents' longest, `cluster_spec.py`): agents on a 10 s period
are not down 3 s after every leader change.

For the same reason an overloaded process does not declare nodes down for heartbeats it has been
sent but not read yet (they wait on its connection behind log entries): a node is down only once
the listener has confirmed it read everything sent before the node's deadline (`heartbeats.py`
measures that with a round trip to the server). A process that is 20 s behind marks a silent node
down 20 s late, rather than marking a thousand live ones down at once. Heartbeats it may have lost
(its connection dropped, e.g. cut off by the server as a slow consumer) count like a restart:
silence before the connection came back is not held against any node.
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
RECHECK_NS = 250_000_000
"""How soon a node past its deadline is looked at again while its heartbeats may be unread."""
_NS = 1_000_000_000
_decode = msgspec.json.Decoder(Heartbeat).decode


@dataclass(frozen=True, slots=True)
class Seen:
    at_ns: int
    grace_ns: int


class Liveness:
    """Remembers when each node was last heard from; `decide` turns that into node status events."""

    def __init__(self, started_ns: int, grace_s: float | None = None, default_period_s: float = 1.0) -> None:
        self.grace_s = grace_s
        """Fixed grace; None means MISSED_PERIODS times the period each agent announces."""
        self.default = Seen(started_ns, self._grace_ns(default_period_s))
        self.seen: dict[str, Seen] = {}
        self.observed = 0
        """Heartbeat messages handled, readable or not (the listener's side of `heartbeats.py`)."""
        self.heard_until_ns: int | None = None
        """Every heartbeat sent before this wall-clock time has been observed; None: not measured,
        taken as now (a listener without `heartbeats.confirm_heard`)."""
        self.missed_until_ns = 0
        """Heartbeats sent before this may have been lost: silence counts from here at the earliest."""

    def restart(self, now_ns: int) -> None:
        """A new leader counts every node's silence from now: what it heard while standing by may
        be stale (it may have been cut off itself), and declaring nodes down on that is worse. Each
        node keeps the grace its agent announced (an agent beating every 5 s is not down after 3 s);
        one never heard has the recorded period's until heard (`node_status`)."""
        self.default = Seen(now_ns, self.default.grace_ns)
        self.missed_until(now_ns)

    def heard_until(self, at_ns: int) -> None:
        self.heard_until_ns = at_ns if self.heard_until_ns is None else max(self.heard_until_ns, at_ns)

    def missed_until(self, at_ns: int) -> None:
        self.missed_until_ns = max(self.missed_until_ns, at_ns)

    def _grace_ns(self, period_s: float) -> int:
        return int((self.grace_s if self.grace_s is not None else MISSED_PERIODS * period_s) * _NS)

    def observe(self, data: bytes, now_ns: int) -> list[str]:
        """Record one heartbeat message; the node ids it speaks for (none if it is unreadable)."""
        self.observed += 1
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

    def period_ns(self, state: ClusterState) -> int | None:
        """The heartbeat period failure is measured in: the longest grace among the cluster's nodes
        (a fixed grace, or 3 of the period each agent announces) over the periods a node may miss.
        None while it is not known: with announced periods, until every node not down has been heard
        since this process started listening or became leader, so a new leader never records the
        default first and the agents' real period a moment later (each write moves the cluster's
        version under a concurrent `docker swarm update`). A silent node stops counting once it is down,
        but nodes none of which was ever heard say nothing: the default stands only for an empty cluster."""
        if self.grace_s is not None:
            return self.default.grace_ns // MISSED_PERIODS
        if any(self._unheard(node) for node in state.nodes.values()):
            return None
        graces = [self.seen[n].grace_ns for n in state.nodes if n in self.seen]
        if state.nodes and not graces:
            return None
        return max(graces, default=self.default.grace_ns) // MISSED_PERIODS

    def _unheard(self, node: Node) -> bool:
        return node.status.state != DOWN and not heard_since_start(self.seen.get(node.id), self.default)

    def decide(self, state: ClusterState, services: set[str], nodes: set[str], now_ns: int) -> Decision:
        unheard = self.default.grace_ns if self.grace_s is not None else recorded_grace_ns(state, self.default.grace_ns)
        return node_status(state, self.seen, self.default, now_ns, self.heard_until_ns, self.missed_until_ns,
                           unheard_grace_ns=unheard)


def heard_since_start(heard: Seen | None, default: Seen) -> bool:
    """Heard since this process started listening or became leader (`default.at_ns`)."""
    return heard is not None and heard.at_ns >= default.at_ns


def _counted_from(heard: Seen | None, default: Seen, unheard_grace_ns: int) -> Seen:
    """Where a node's silence counts from, with its grace: its last heartbeat if heard since the start,
    else the start, with `default`'s grace or the longer one it announced before. A node never heard
    at all gets `unheard_grace_ns` (the recorded period's): its own period is unknown, and a cluster
    mixing periods must not have a node heard at 1 s wait out another agent's 10 s period."""
    if heard is None:
        return Seen(default.at_ns, max(default.grace_ns, unheard_grace_ns))
    if heard_since_start(heard, default):
        return heard
    return Seen(default.at_ns, max(default.grace_ns, heard.grace_ns))


def recorded_grace_ns(state: ClusterState, default_grace_ns: int) -> int:
    """Pure: the grace the heartbeat period the log records implies (the previous leader's measure,
    the longest the agents announce), `default_grace_ns` if none is recorded."""
    period_ns = state.cluster.spec.dispatcher.heartbeat_period if state.cluster and state.cluster.spec else None
    return MISSED_PERIODS * period_ns if period_ns else default_grace_ns


def node_status(state: ClusterState, seen: dict[str, Seen], default: Seen, now_ns: int,
                heard_until_ns: int | None = None, missed_until_ns: int = 0, unheard_grace_ns: int = 0) -> Decision:
    """Pure: `down` for nodes silent past their grace, `ready` for down nodes heard from since, and a
    timer for the next deadline. Nodes not heard since `default.at_ns` (the listener's start, or
    becoming leader) count from then, with `default`'s grace or the longer one they announced before
    (never heard: `unheard_grace_ns`, if longer), and nobody's silence counts before `missed_until_ns`.
    A node past its deadline is down only if everything sent until then was read (`heard_until_ns`,
    None: now); otherwise it is looked at again a moment later."""
    out = Decision()
    next_deadline: int | None = None
    heard_until = now_ns if heard_until_ns is None else min(now_ns, heard_until_ns)
    for node in state.nodes.values():
        heard = seen.get(node.id)
        last = _counted_from(heard, default, unheard_grace_ns)
        deadline = max(last.at_ns, missed_until_ns) + last.grace_ns
        heard_since = heard is not None and heard.at_ns >= missed_until_ns
        down = node.status.state == DOWN
        if now_ns >= deadline:
            if down:
                continue
            if heard_until >= deadline:
                out.intents.append(_status(node, DOWN, DOWN_MESSAGE))
            else:  # its heartbeats may be waiting unread: decide once the listener has caught up
                recheck = now_ns + RECHECK_NS
                next_deadline = recheck if next_deadline is None else min(next_deadline, recheck)
        elif down:
            if heard_since:  # heard only before a gap says nothing about now
                out.intents.append(_status(node, READY, ""))
        else:
            next_deadline = deadline if next_deadline is None else min(next_deadline, deadline)
    if next_deadline is not None:
        out.timers.append(Timer(next_deadline))
    return out


def _status(node: Node, state: str, message: str) -> Intent:
    return Intent(NodeStatusChanged(node_id=node.id, state=state, message=message),
                  expect_seq=node.version.index, expect_subject=subjects.node_all(node.id))
