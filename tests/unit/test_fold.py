"""The fold: each event's effect on the projection, and the rules that keep it safe to replay."""

from __future__ import annotations

import msgspec

from schemas.events import (
    NodeJoined,
    NodeRejoined,
    NodeStatusChanged,
    NodeUpdated,
    ServiceCreated,
    ServiceRemoved,
    ServiceUpdated,
    TaskAssigned,
    TaskCreated,
    TaskDesiredStateChanged,
    TaskPending,
    TaskRemoved,
    TaskStatusChanged,
)
from schemas.node import NodeDescription, NodeSpec
from schemas.service import ServiceSpec
from schemas.task import Task, TaskState, TaskStatus
from services.kernel import subjects
from services.kernel.fold import apply, apply_raw
from services.kernel.state import ClusterState
from tests.events import envelope, fold


def _service(name: str = "web", sid: str = "s1") -> ServiceCreated:
    return ServiceCreated(service_id=sid, spec=ServiceSpec(name=name))


def _task(tid: str = "t1", sid: str = "s1", slot: int = 1, node: str = "") -> TaskCreated:
    return TaskCreated(task=Task(id=tid, service_id=sid, slot=slot, node_id=node))


def _status(tid: str, state: TaskState) -> TaskStatusChanged:
    return TaskStatusChanged(task_id=tid, status=TaskStatus(state=state))


def _joined(nid: str = "n1") -> NodeJoined:
    return NodeJoined(node_id=nid, spec=NodeSpec(), description=NodeDescription(hostname=nid), addr="127.0.0.1")


def test_service_created_is_indexed_by_name_and_versioned_by_sequence() -> None:
    state = fold([_service()])
    svc = state.services["s1"]
    assert state.service_by_name == {"web": "s1"}
    assert svc.version.index == 1 and svc.spec_version.index == 1 and svc.created_at


def test_service_update_keeps_the_previous_spec_and_clears_update_status() -> None:
    state = fold([_service(), ServiceUpdated(service_id="s1", spec=ServiceSpec(name="web2"))])
    svc = state.services["s1"]
    assert svc.previous_spec == ServiceSpec(name="web") and svc.spec.name == "web2"
    assert state.service_by_name == {"web2": "s1"} and svc.update_status is None


def test_rollback_update_reports_a_manually_requested_rollback() -> None:
    state = fold([_service(), ServiceUpdated(service_id="s1", spec=ServiceSpec(name="web"), rollback=True)])
    status = state.services["s1"].update_status
    assert status is not None and status.state == "rollback_started"
    assert status.message == "manually requested rollback"


def test_automatic_rollback_names_the_failed_task_and_clears_the_previous_spec() -> None:
    state = fold([_service(), ServiceUpdated(service_id="s1", spec=ServiceSpec(name="web", labels={"v": "2"})),
                  ServiceUpdated(service_id="s1", spec=ServiceSpec(name="web"), rollback=True, failed_task="t9")])
    svc = state.services["s1"]
    assert svc.previous_spec is None and svc.update_status is not None
    assert svc.update_status.message == "update rolled back due to failure or early termination of task t9"


def test_service_removed_frees_the_name() -> None:
    state = fold([_service(), ServiceRemoved(service_id="s1")])
    assert not state.services and not state.service_by_name and state.last_service_spec_seq == 2


def test_task_lifecycle_indexes_by_service_slot_and_node() -> None:
    state = fold([_service(), _joined(), _task()])
    assert state.tasks_by_service["s1"] == {"t1"}
    fold([TaskAssigned(task=state.tasks["t1"], node_id="n1"), _status("t1", TaskState.RUNNING)], state)
    task = state.tasks["t1"]
    assert task.node_id == "n1" and task.status.state == TaskState.RUNNING
    assert state.tasks_by_node["n1"] == {"t1"}
    fold([TaskRemoved(task_id="t1")], state)
    assert not state.tasks and not state.tasks_by_node and not state.tasks_by_service


def test_a_status_that_would_move_a_task_backwards_is_ignored_and_counted() -> None:
    state = fold([_task(), _status("t1", TaskState.RUNNING), _status("t1", TaskState.STARTING)])
    assert state.tasks["t1"].status.state == TaskState.RUNNING
    assert state.stats.ignored["TaskStatusChanged"] == 1


def test_an_ignored_event_still_advances_the_task_version_used_for_compare_and_set() -> None:
    state = fold([_task(), _status("t1", TaskState.RUNNING), _status("t1", TaskState.STARTING)])
    assert state.tasks["t1"].version.index == 3


def test_desired_state_never_decreases() -> None:
    state = fold([_task(), TaskDesiredStateChanged(task_id="t1", desired_state=TaskState.SHUTDOWN),
                  TaskDesiredStateChanged(task_id="t1", desired_state=TaskState.RUNNING)])
    assert state.tasks["t1"].desired_state == TaskState.SHUTDOWN


def test_assignment_after_the_task_moved_on_is_ignored() -> None:
    state = fold([_task(), _status("t1", TaskState.FAILED)])
    fold([TaskAssigned(task=state.tasks["t1"], node_id="n1")], state)
    assert state.tasks["t1"].node_id == "" and state.stats.ignored["TaskAssigned"] == 1


def test_a_write_under_the_unassigned_prefix_after_the_assignment_is_ignored_and_moves_no_version() -> None:
    """The server lets it through: the unassigned scope does not hold the assignment (test_subjects.py).
    A writer whose view is current names the assigned scope, whose last entry is the assignment."""
    state = fold([_task()])
    fold([TaskAssigned(task=state.tasks["t1"], node_id="n1")], state)
    for ev in (TaskDesiredStateChanged(task_id="t1", desired_state=TaskState.SHUTDOWN), TaskRemoved(task_id="t1"),
               TaskPending(task_id="t1", err="no suitable node")):
        apply(state, state.seq + 1, envelope(ev), subjects.task("", "t1", "desired"))
    task = state.tasks["t1"]
    assert (task.desired_state, task.status.state, task.version.index) == (TaskState.RUNNING, TaskState.ASSIGNED, 2)
    assert state.seq == 5 and sum(state.stats.ignored.values()) == 3
    fold([TaskDesiredStateChanged(task_id="t1", desired_state=TaskState.SHUTDOWN)], state)  # from the current view
    assert state.tasks["t1"].desired_state == TaskState.SHUTDOWN and state.tasks["t1"].version.index == 6


def test_writes_under_the_unassigned_prefix_apply_while_the_task_waits() -> None:
    state = fold([_task()])
    apply(state, 2, envelope(TaskDesiredStateChanged(task_id="t1", desired_state=TaskState.SHUTDOWN)),
          subjects.task("", "t1", "desired"))
    assert state.tasks["t1"].desired_state == TaskState.SHUTDOWN and state.tasks["t1"].version.index == 2


def test_an_agent_learns_a_task_from_its_assignment_alone() -> None:
    state = fold([TaskAssigned(task=Task(id="t9", service_id="s1", slot=2), node_id="n1")])
    assert state.tasks["t9"].status.state == TaskState.ASSIGNED and state.tasks_by_node["n1"] == {"t9"}


def test_pending_carries_the_reason() -> None:
    state = fold([_task(), TaskPending(task_id="t1", err="no suitable node")])
    assert state.tasks["t1"].status.state == TaskState.PENDING and state.tasks["t1"].status.err == "no suitable node"


def test_nodes_join_update_go_down_and_rejoin() -> None:
    state = fold([_joined(), NodeUpdated(node_id="n1", spec=NodeSpec(availability="drain"))])
    node = state.nodes["n1"]
    assert node.status.state == "ready" and node.spec.availability == "drain" and node.spec.labels == {}
    fold([NodeStatusChanged(node_id="n1", state="down", message="heartbeat failure")], state)
    assert state.nodes["n1"].status.state == "down" and state.nodes["n1"].status.addr == "127.0.0.1"
    fold([NodeRejoined(node_id="n1", description=NodeDescription(hostname="h2"), addr="127.0.0.2")], state)
    assert state.nodes["n1"].status.state == "ready" and state.nodes["n1"].description.hostname == "h2"


def test_events_about_unknown_objects_are_ignored() -> None:
    state = fold([_status("nope", TaskState.RUNNING), NodeUpdated(node_id="x", spec=NodeSpec())])
    assert not state.tasks and not state.nodes and sum(state.stats.ignored.values()) == 2


def test_replaying_an_already_applied_sequence_changes_nothing() -> None:
    state = fold([_task()])
    apply(state, 1, envelope(_status("t1", TaskState.RUNNING)))
    assert state.tasks["t1"].status.state == TaskState.NEW


def test_corrupt_entries_are_skipped_and_counted() -> None:
    state = ClusterState()
    apply_raw(state, 1, b"not json")
    apply_raw(state, 2, msgspec.json.encode(envelope(_task())))
    assert state.stats.skipped == 1 and "t1" in state.tasks and state.seq == 2


def test_the_fold_never_mutates_objects_inside_events() -> None:
    created = _task()
    state = fold([created, _status("t1", TaskState.RUNNING)])
    assert created.task.status.state == TaskState.NEW and state.tasks["t1"] is not created.task


def test_touched_sets_record_what_changed_only_when_tracking() -> None:
    state = ClusterState()
    fold([_service()], state)
    assert state.take_touched() == (set(), set())
    state.track_changes = True
    fold([_joined(), _task()], state)
    assert state.take_touched() == ({"s1"}, {"n1"})
    assert state.take_touched() == (set(), set())
