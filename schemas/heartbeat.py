"""Agent heartbeats. They travel on core NATS (`shoal.hb.<first node id>`), never in the log: losing
one is harmless, and a log entry per node per second would drown the facts that matter."""

from __future__ import annotations

from schemas.base import Fact


class Heartbeat(Fact, frozen=True):
    """One agent process's sign of life, for every node it hosts (a `sim` agent hosts many)."""

    nodes: list[str]
    period: float = 1.0
