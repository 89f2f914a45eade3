"""Which audit-log entries a `/shoal/events` request wants (keys type, actor, service, node, task).

Most task events name only their task (`TaskStatusChanged`, `TaskPending`, ...), yet an auditor
asking for a service or a node wants those too. The node is in the subject of every task entry
after assignment; the service is learned from the `TaskCreated`/`TaskAssigned` entries the request
passes, and for tasks created before its window, from the gateway's current state.
"""

from __future__ import annotations

from schemas.events import Envelope, TaskAssigned, TaskCreated, TaskRemoved
from services.api import filters
from services.kernel.state import ClusterState
from services.kernel.subjects import task_node

KEYS = frozenset({"type", "actor", "service", "node", "task"})


class LogFilter:
    def __init__(self, wanted: filters.Filters, state: ClusterState) -> None:
        self.wanted = wanted
        self.state = state
        self.service_of: dict[str, str] = {}

    def __call__(self, subject: str, env: Envelope) -> bool:
        service, node, task = self.about(subject, env)
        wanted = self.wanted
        return (
            filters.one_of(type(env.event).__name__, wanted.get("type"))
            and filters.by_prefix(env.actor, wanted.get("actor"))
            and filters.one_of(service, wanted.get("service"))
            and filters.one_of(node, wanted.get("node"))
            and filters.one_of(task, wanted.get("task"))
        )

    def about(self, subject: str, env: Envelope) -> tuple[str, str, str]:
        """The (service, node, task) ids an entry concerns; "" where it concerns none."""
        ev = env.event
        task = ev.task if isinstance(ev, (TaskCreated, TaskAssigned)) else None
        task_id = str(getattr(ev, "task_id", "") or (task.id if task is not None else ""))
        if task is not None and "service" in self.wanted:  # remembered only while it can matter
            self.service_of[task.id] = task.service_id
        service = str(getattr(ev, "service_id", "") or self._service_of(task_id))
        if isinstance(ev, TaskRemoved):  # a followed request lives long: forget tasks that are gone
            self.service_of.pop(task_id, None)
        node = str(getattr(ev, "node_id", "") or (task.node_id if task is not None else "") or task_node(subject))
        return service, node, task_id

    def _service_of(self, task_id: str) -> str:
        if not task_id:
            return ""
        known = self.service_of.get(task_id)
        if known is None:
            current = self.state.tasks.get(task_id)
            known = current.service_id if current is not None else ""
        return known

