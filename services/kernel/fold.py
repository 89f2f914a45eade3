"""The fold: `apply(state, seq, envelope)` turns one log entry into the next cluster state.

It is deterministic and does no I/O, so replaying the same log always yields the same state. It
updates `state` in place (copying a 100,000-task state per event would cap replay at a handful of
events per second) and never mutates an object it received inside an event: nested records are
replaced, not edited. Events that would move a task backwards, or that refer to unknown objects,
are ignored and counted, never fatal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from schemas.base import Version
from schemas.codec import decode
from schemas.events import (
    ClusterCreated,
    ClusterSpecUpdated,
    Envelope,
    JoinTokenRotated,
    LeaderElected,
    LeaderWrote,
    NodeJoined,
    NodeRejoined,
    NodeRemoved,
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
    UpdateStatusChanged,
)
from schemas.node import Node, NodeStatus
from schemas.service import Endpoint, JobStatus, Service, ServiceSpec, UpdateStatus
from schemas.task import RANK, TaskState, TaskStatus
from services.kernel.state import Cluster, ClusterState, Leader
from services.kernel.subjects import is_unassigned_task

_replace = msgspec.structs.replace
_RUNNING_RANK = RANK[TaskState.RUNNING]

Handler = Callable[[ClusterState, int, Envelope, Any], bool]


def apply(state: ClusterState, seq: int, env: Envelope, subject: str = "") -> ClusterState:
    """Apply one entry. Entries at or below `state.seq` were already applied and are skipped.

    `subject` is the entry's. A task entry written under the unassigned prefix once its task is
    assigned came from a view older than the assignment: its compare-and-set scope did not hold the
    `TaskAssigned` (`subjects.task_all`), so the server let it through. It is ignored, and moves no
    version, since it is not on the subjects the task's writers now compare against."""
    if seq <= state.seq:
        return state
    state.seq = seq
    ev = env.event
    handler, name = _DISPATCH[type(ev)]
    if subject and is_unassigned_task(subject) and _assigned_already(state, ev):
        state.stats.ignored[name] += 1
    elif handler(state, seq, env, ev):
        state.stats.applied[name] += 1
    else:
        state.stats.ignored[name] += 1
        _note_ignored(state, seq, ev)
    return state


def _assigned_already(state: ClusterState, ev: object) -> bool:
    task = state.tasks.get(getattr(ev, "task_id", ""))
    return task is not None and bool(task.node_id)


def _note_ignored(state: ClusterState, seq: int, ev: object) -> None:
    """An ignored entry still sits on its entity's subjects, so it still moves the sequence that
    compare-and-set writers must name; otherwise one ignored event would make them conflict forever."""
    if isinstance(ev, (ServiceCreated, ServiceUpdated, ServiceRemoved)):
        state.last_service_spec_seq = seq
    task_id = getattr(ev, "task_id", None) or (ev.task.id if isinstance(ev, (TaskCreated, TaskAssigned)) else None)
    if task_id and (task := state.tasks.get(task_id)) is not None:
        task.version = Version(seq)
    service_id = getattr(ev, "service_id", None)
    if service_id and (svc := state.services.get(service_id)) is not None:
        svc.version = Version(seq)
    node_id = getattr(ev, "node_id", None)
    if node_id and not isinstance(ev, TaskAssigned) and (node := state.nodes.get(node_id)) is not None:
        node.version = Version(seq)


def apply_raw(state: ClusterState, seq: int, data: bytes, subject: str = "") -> ClusterState:
    """Decode and apply; a corrupt or unknown entry advances `seq` and is counted, never raised."""
    try:
        env = decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        if seq > state.seq:
            state.seq = seq
            state.stats.skipped += 1
        return state
    return apply(state, seq, env, subject)


# -- cluster -----------------------------------------------------------------------------------


def _cluster_created(state: ClusterState, seq: int, env: Envelope, ev: ClusterCreated) -> bool:
    if state.cluster is not None:
        return False
    state.cluster = Cluster(
        id=ev.cluster_id,
        version=Version(seq),
        created_at=env.time,
        updated_at=env.time,
        worker_token=ev.worker_token,
        manager_token=ev.manager_token,
    )
    return True


def _token_rotated(state: ClusterState, seq: int, env: Envelope, ev: JoinTokenRotated) -> bool:
    c = state.cluster
    if c is None or ev.role not in ("worker", "manager"):
        return False
    c.version, c.updated_at = Version(seq), env.time
    if ev.role == "worker":
        c.worker_token = ev.token
    else:
        c.manager_token = ev.token
    return True


def _cluster_spec(state: ClusterState, seq: int, env: Envelope, ev: ClusterSpecUpdated) -> bool:
    c = state.cluster
    if c is None:
        return False
    c.version, c.updated_at, c.spec = Version(seq), env.time, ev.spec
    return True


# -- nodes -------------------------------------------------------------------------------------


def _node_joined(state: ClusterState, seq: int, env: Envelope, ev: NodeJoined) -> bool:
    if ev.node_id in state.nodes:
        return _node_rejoined(state, seq, env, ev)
    state.nodes[ev.node_id] = Node(
        id=ev.node_id,
        version=Version(seq),
        created_at=env.time,
        updated_at=env.time,
        spec=_replace(ev.spec, labels=ev.spec.labels or {}),
        description=ev.description,
        status=NodeStatus(state="ready", addr=ev.addr),
        status_since=env.time,
    )
    state.touch(node_id=ev.node_id)
    return True


def _node_rejoined(state: ClusterState, seq: int, env: Envelope, ev: NodeRejoined | NodeJoined) -> bool:
    node = state.nodes.get(ev.node_id)
    if node is None:
        return False
    node.version, node.updated_at = Version(seq), env.time
    node.description = ev.description
    if node.status.state != "ready":
        node.status_since = env.time
    node.status = NodeStatus(state="ready", addr=ev.addr)
    state.touch(node_id=ev.node_id)
    return True


def _node_updated(state: ClusterState, seq: int, env: Envelope, ev: NodeUpdated) -> bool:
    node = state.nodes.get(ev.node_id)
    if node is None:
        return False
    node.version, node.updated_at = Version(seq), env.time
    node.spec = _replace(ev.spec, labels=ev.spec.labels or {})
    state.touch(node_id=ev.node_id)
    return True


def _node_status(state: ClusterState, seq: int, env: Envelope, ev: NodeStatusChanged) -> bool:
    node = state.nodes.get(ev.node_id)
    if node is None:
        return False
    node.version, node.updated_at = Version(seq), env.time
    if node.status.state != ev.state:
        node.status_since = env.time
    node.status = NodeStatus(state=ev.state, message=ev.message or None, addr=node.status.addr)
    state.touch(node_id=ev.node_id)
    return True


def _node_removed(state: ClusterState, seq: int, env: Envelope, ev: NodeRemoved) -> bool:
    if state.nodes.pop(ev.node_id, None) is None:
        return False
    state.touch(node_id=ev.node_id)
    for task_id in state.tasks_by_node.get(ev.node_id, ()):
        state.touch(service_id=state.tasks[task_id].service_id)
    return True


# -- services ----------------------------------------------------------------------------------


def _service_created(state: ClusterState, seq: int, env: Envelope, ev: ServiceCreated) -> bool:
    if ev.service_id in state.services:
        return False
    state.services[ev.service_id] = Service(
        id=ev.service_id,
        version=Version(seq),
        created_at=env.time,
        updated_at=env.time,
        spec=ev.spec,
        endpoint=Endpoint(spec=ev.spec.endpoint_spec, ports=ev.ports),
        job_status=_job_status(ev.spec, -1, env.time),
        spec_version=Version(seq),
    )
    state.service_by_name[ev.spec.name] = ev.service_id
    state.last_service_spec_seq = seq
    state.touch(service_id=ev.service_id)
    return True


def _service_updated(state: ClusterState, seq: int, env: Envelope, ev: ServiceUpdated) -> bool:
    svc = state.services.get(ev.service_id)
    if svc is None:
        return False
    if svc.spec.name != ev.spec.name:
        state.service_by_name.pop(svc.spec.name, None)
        state.service_by_name[ev.spec.name] = svc.id
    automatic = ev.rollback and bool(ev.failed_task)
    svc.previous_spec, svc.spec = (None if automatic else svc.spec), ev.spec
    svc.version, svc.updated_at, svc.spec_version = Version(seq), env.time, Version(seq)
    svc.endpoint = Endpoint(spec=ev.spec.endpoint_spec, ports=ev.ports)
    svc.job_status = _job_status(ev.spec, svc.job_status.job_iteration.index if svc.job_status else -1, env.time)
    svc.update_status = None
    if ev.rollback:
        message = (f"update rolled back due to failure or early termination of task {ev.failed_task}"
                   if automatic else "manually requested rollback")
        svc.update_status = UpdateStatus(state="rollback_started", started_at=env.time, message=message)
    state.last_service_spec_seq = seq
    state.touch(service_id=svc.id)
    return True


def _job_status(spec: ServiceSpec, iteration: int, time: str) -> JobStatus | None:
    """A job runs again on every change of its spec: the next iteration, executed now (swarmkit's
    controlapi). Services that are not jobs have no JobStatus."""
    mode = spec.mode
    if mode is None or (mode.replicated_job is None and mode.global_job is None):
        return None
    return JobStatus(job_iteration=Version(iteration + 1), last_execution=time)


def _service_removed(state: ClusterState, seq: int, env: Envelope, ev: ServiceRemoved) -> bool:
    svc = state.services.pop(ev.service_id, None)
    if svc is None:
        return False
    state.service_by_name.pop(svc.spec.name, None)
    state.last_service_spec_seq = seq
    state.touch(service_id=svc.id)
    return True


def _update_status(state: ClusterState, seq: int, env: Envelope, ev: UpdateStatusChanged) -> bool:
    svc = state.services.get(ev.service_id)
    if svc is None:
        return False
    svc.version, svc.updated_at = Version(seq), env.time
    svc.update_status = ev.update_status
    state.touch(service_id=svc.id)
    return True


# -- tasks -------------------------------------------------------------------------------------


def _task_created(state: ClusterState, seq: int, env: Envelope, ev: TaskCreated) -> bool:
    if ev.task.id in state.tasks:
        return False
    status = ev.task.status
    task = _replace(
        ev.task,
        version=Version(seq),
        created_at=env.time,
        updated_at=env.time,
        status=status if status.timestamp else _replace(status, timestamp=env.time),
    )
    state.add_task(task)
    if state.track_changes:
        state.progress(task.service_id, task.node_id, task.id)
    return True


def _task_assigned(state: ClusterState, seq: int, env: Envelope, ev: TaskAssigned) -> bool:
    task = state.tasks.get(ev.task.id)
    status = TaskStatus(timestamp=env.time, state=TaskState.ASSIGNED, message="scheduler assigned task to node")
    if task is None:
        # An agent sees a task first here: its TaskCreated lives on another node's subject.
        task = _replace(ev.task, node_id=ev.node_id, version=Version(seq), updated_at=env.time, status=status)
        state.add_task(task)
    else:
        if RANK[task.status.state] > RANK[TaskState.ASSIGNED] or (task.node_id and task.node_id != ev.node_id):
            return False
        if not task.node_id:
            state.unindex_task(task)
            task.node_id = ev.node_id
            state.index_task(task)
        observed, desired = task.status.state, task.desired_state
        task.status = status
        state.recount(task, observed, desired)
        task.version, task.updated_at = Version(seq), env.time
    if state.track_changes:
        state.progress(task.service_id, ev.node_id, task.id)
    return True


def _task_pending(state: ClusterState, seq: int, env: Envelope, ev: TaskPending) -> bool:
    task = state.tasks.get(ev.task_id)
    if task is None or RANK[task.status.state] > RANK[TaskState.PENDING]:
        return False
    observed, desired = task.status.state, task.desired_state
    task.status = TaskStatus(
        timestamp=env.time, state=TaskState.PENDING, message="pending task scheduling", err=ev.err
    )
    state.recount(task, observed, desired)
    task.version, task.updated_at = Version(seq), env.time
    if state.track_changes:  # the orchestrator may be holding services until the scheduler decides on it
        state.progress(task.service_id, task.node_id, task.id)
    return True


def _task_desired(state: ClusterState, seq: int, env: Envelope, ev: TaskDesiredStateChanged) -> bool:
    task = state.tasks.get(ev.task_id)
    if task is None or RANK[ev.desired_state] < RANK[task.desired_state]:
        return False
    observed, desired = task.status.state, task.desired_state
    task.desired_state = ev.desired_state
    state.recount(task, observed, desired)
    task.version, task.updated_at = Version(seq), env.time
    if state.track_changes:
        state.touch(task.service_id, task.node_id, task.id)
    return True


def _task_status(state: ClusterState, seq: int, env: Envelope, ev: TaskStatusChanged) -> bool:
    task = state.tasks.get(ev.task_id)
    status = ev.status
    rank = RANK[status.state]
    if task is None or rank < RANK[task.status.state]:
        return False
    observed, desired = task.status.state, task.desired_state
    task.status = status if status.timestamp else _replace(status, timestamp=env.time)
    state.recount(task, observed, desired)
    task.version, task.updated_at = Version(seq), env.time
    if state.track_changes:
        if rank <= _RUNNING_RANK:
            state.progress(task.service_id, task.node_id, task.id)
        else:
            state.touch(task.service_id, task.node_id, task.id)
    return True


def _task_removed(state: ClusterState, seq: int, env: Envelope, ev: TaskRemoved) -> bool:
    task = state.remove_task(ev.task_id)
    if task is None:
        return False
    if state.track_changes:
        state.touch(task.service_id, task.node_id, task.id)
    return True


# -- leadership --------------------------------------------------------------------------------


def _leader_elected(state: ClusterState, seq: int, env: Envelope, ev: LeaderElected) -> bool:
    current = state.leaders.get(ev.loop)
    if current is not None and ev.term <= current.term:
        return False
    state.leaders[ev.loop] = Leader(loop=ev.loop, term=ev.term, holder=ev.holder, addr=ev.addr, since=env.time)
    return True


def _leader_wrote(state: ClusterState, seq: int, env: Envelope, ev: LeaderWrote) -> bool:
    """A fence: it carried the batch past the server's check and changes nothing itself."""
    return True


_HANDLERS: dict[type, Handler] = {
    ClusterCreated: _cluster_created,
    JoinTokenRotated: _token_rotated,
    ClusterSpecUpdated: _cluster_spec,
    NodeJoined: _node_joined,
    NodeRejoined: _node_rejoined,
    NodeUpdated: _node_updated,
    NodeStatusChanged: _node_status,
    NodeRemoved: _node_removed,
    ServiceCreated: _service_created,
    ServiceUpdated: _service_updated,
    ServiceRemoved: _service_removed,
    UpdateStatusChanged: _update_status,
    TaskCreated: _task_created,
    TaskAssigned: _task_assigned,
    TaskPending: _task_pending,
    TaskDesiredStateChanged: _task_desired,
    TaskStatusChanged: _task_status,
    TaskRemoved: _task_removed,
    LeaderElected: _leader_elected,
    LeaderWrote: _leader_wrote,
}

_DISPATCH: dict[type, tuple[Handler, str]] = {cls: (handler, cls.__name__) for cls, handler in _HANDLERS.items()}
"""Handler and counter key per event class, looked up once per event instead of computed."""
