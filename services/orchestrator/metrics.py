"""The orchestrator's own metrics (the shared ones live in `services.kernel.metrics`)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter

from schemas.events import NodeStatusChanged, TaskCreated
from schemas.task import TaskState
from services.kernel.eventlog import AppendResult, Conflict
from services.kernel.writer import Intent

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
