"""Spread (swarm-behaviour 4.4): among the nodes that pass the filters, prefer the one with the fewest
active tasks of the service, then the fewest active tasks overall; a node where this service (same
spec version) failed at least 5 times in the last 5 minutes goes behind the others."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from schemas.task import Task, TaskState
from services.kernel.ids import parse_ns
from services.kernel.placement.nodeinfo import NodeInfo
from services.kernel.state import ClusterState

FAULTY_AFTER = 5
FAULTY_WINDOW_NS = 5 * 60 * 1_000_000_000

Rank = tuple[int, int, int, str]


@dataclass(frozen=True, slots=True)
class Failure:
    service_id: str
    spec_version: int
    node_id: str
    at_ns: int


class RecentFailures:
    """Failures seen in the last window. Remembered here rather than read from the tasks each time
    because the orchestrator prunes task history (5 per slot): a one-replica service failing on
    the same node would otherwise never show 5 failures. Like swarmkit's, lost on restart."""

    def __init__(self) -> None:
        self.by_task: dict[str, Failure] = {}

    def note(self, state: ClusterState, service_ids: set[str], now_ns: int) -> None:
        for service_id in service_ids:
            for task in state.tasks_of_service(service_id):
                failure = _failure(task)
                if failure is not None:
                    self.by_task[task.id] = failure
        since = now_ns - FAULTY_WINDOW_NS
        self.by_task = {k: f for k, f in self.by_task.items() if f.at_ns >= since}

    def on_nodes(self, service_id: str, spec_version: int) -> Counter[str]:
        return Counter(f.node_id for f in self.by_task.values()
                       if f.service_id == service_id and f.spec_version == spec_version)


def _failure(task: Task) -> Failure | None:
    if task.status.state not in (TaskState.FAILED, TaskState.REJECTED) or not task.node_id:
        return None
    try:
        at = parse_ns(task.status.timestamp)
    except ValueError:
        return None
    return Failure(task.service_id, task.spec_version.index, task.node_id, at)


def rank(info: NodeInfo, service_id: str, failures: Counter[str]) -> Rank:
    """Smaller is better. Failures count only from FAULTY_AFTER on, so below it nodes tie on them;
    the node id last makes the choice deterministic."""
    failed = failures[info.node.id]
    return (failed if failed >= FAULTY_AFTER else 0, info.active_by_service[service_id], info.active, info.node.id)
