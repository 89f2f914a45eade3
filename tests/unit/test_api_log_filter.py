"""The audit log's service and node filters also find the task events that name only their task."""

from __future__ import annotations

from schemas.events import (
    Envelope,
    NodeUpdated,
    ServiceCreated,
    TaskAssigned,
    TaskCreated,
    TaskRemoved,
    TaskStatusChanged,
)
from schemas.node import NodeSpec
from schemas.service import ServiceSpec
from schemas.task import Task, TaskState, TaskStatus
from services.api.log_filter import LogFilter
from services.kernel import subjects
from services.kernel.state import ClusterState
from tests.events import envelope, fold

TASK = Task(id="t1", service_id="s1", slot=1)
RUNNING = TaskStatusChanged(task_id="t1", status=TaskStatus(state=TaskState.RUNNING))


def entries() -> list[tuple[str, Envelope]]:
    return [
        (subjects.service("s1", "spec"), envelope(ServiceCreated(service_id="s1", spec=ServiceSpec(name="web")))),
        (subjects.task("", "t1", "desired"), envelope(TaskCreated(task=TASK), actor="orchestrator")),
        (subjects.task("n1", "t1", "placement"), envelope(TaskAssigned(task=TASK, node_id="n1"), actor="scheduler")),
        (subjects.task("n1", "t1", "status"), envelope(RUNNING, actor="agent:n1")),
        (subjects.node("n1", "spec"), envelope(NodeUpdated(node_id="n1", spec=NodeSpec()))),
    ]


def kept(wanted: dict[str, set[str]], state: ClusterState | None = None, start: int = 0) -> list[str]:
    keep = LogFilter(wanted, state or ClusterState())
    return [type(env.event).__name__ for subject, env in entries()[start:] if keep(subject, env)]


def test_a_service_filter_follows_its_tasks() -> None:
    assert kept({"service": {"s1"}}) == ["ServiceCreated", "TaskCreated", "TaskAssigned", "TaskStatusChanged"]
    assert kept({"service": {"s2"}}) == []


def test_a_window_after_the_task_was_created_asks_the_current_state() -> None:
    state = fold([ServiceCreated(service_id="s1", spec=ServiceSpec(name="web")), TaskCreated(task=TASK)])
    assert kept({"service": {"s1"}}, state, start=3) == ["TaskStatusChanged"]
    assert kept({"service": {"s1"}}, start=3) == []  # a task the gateway no longer knows


def test_node_task_type_and_actor_filters() -> None:
    assert kept({"node": {"n1"}}) == ["TaskAssigned", "TaskStatusChanged", "NodeUpdated"]
    assert kept({"task": {"t1"}, "type": {"TaskStatusChanged", "TaskCreated"}}) == ["TaskCreated", "TaskStatusChanged"]
    assert kept({"actor": {"agent"}}) == ["TaskStatusChanged"]


def test_a_long_followed_request_remembers_no_task_it_cannot_need() -> None:
    """A `follow=1` request lives for days: its memory must not grow with every task ever created."""
    unfiltered = LogFilter({"type": {"TaskCreated"}}, ClusterState())
    service_wise = LogFilter({"service": {"s1"}}, ClusterState())
    for subject, env in entries():
        unfiltered(subject, env)
        service_wise(subject, env)
    assert unfiltered.service_of == {} and service_wise.service_of == {"t1": "s1"}
    service_wise(subjects.task("n1", "t1", "desired"), envelope(TaskRemoved(task_id="t1")))
    assert service_wise.service_of == {}
