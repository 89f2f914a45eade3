"""The orchestrator's own metrics (the shared ones live in `services.kernel.metrics`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from schemas.events import NodeStatusChanged, TaskCreated
from schemas.task import TaskState
from services.kernel.eventlog import AppendResult, Conflict
from services.kernel.writer import Intent
from services.orchestrator.decide import Orchestrator

HEARTBEATS = Counter("shoal_heartbeats_received_total", "Heartbeat messages received from agents")
HEARTBEATS_UNREADABLE = Counter("shoal_heartbeats_unreadable_total", "Heartbeat messages that did not decode")
RESTARTS = Counter("shoal_task_restarts_total", "Replacement tasks created by the restart policy")
NODE_TRANSITIONS = Counter("shoal_node_liveness_transitions_total", "Nodes marked down or ready again by liveness",
                           ["state"])


def count_appended(intents: Sequence[Intent], results: Sequence[AppendResult]) -> None:
    for intent, result in zip(intents, results, strict=True):
        if isinstance(result, Conflict):
            continue
        ev = intent.event
        if isinstance(ev, TaskCreated) and ev.task.desired_state == TaskState.READY:
            RESTARTS.inc()
        elif isinstance(ev, NodeStatusChanged):
            NODE_TRANSITIONS.labels(state=ev.state).inc()


class HeldCollector(Collector):
    """Services held back from creating tasks (`pacing.py`), read from the orchestrator's memory at
    scrape time: non-zero while the scheduler is behind, and the leader's alone (a standby holds none)."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("shoal_orchestrator_services_held",
                                "Services waiting for the scheduler to catch up before creating more tasks",
                                value=len(self.orchestrator.held))
