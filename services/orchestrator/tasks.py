"""Facts about single tasks, and the intents that change them, shared by every orchestration rule.

Every intent on an existing task is a compare-and-set against the last sequence on any of that
task's subjects: if the scheduler or an agent wrote in between, the write fails and the next pass
decides again on what really happened.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from schemas.events import TaskCreated, TaskDesiredStateChanged, TaskRemoved, TaskStatusChanged
from schemas.service import Service, TaskSpec
from schemas.task import RANK, Task, TaskState, TaskStatus
from services.kernel import subjects
from services.kernel.ids import new_id, parse_ns
from services.kernel.state import ClusterState
from services.kernel.writer import Intent

_RUNNING = RANK[TaskState.RUNNING]
_ASSIGNED = RANK[TaskState.ASSIGNED]

ORPHANED_MESSAGE = "Task belonged to a node that has been deleted"


def is_live(task: Task) -> bool:
    """Wanted up (desired `ready` or `running`): the tasks that serve a slot."""
    return RANK[task.desired_state] <= _RUNNING


def has_stopped(task: Task) -> bool:
    return RANK[task.status.state] > _RUNNING


def never_ran(task: Task) -> bool:
    """Not yet bound to a node, so no agent will ever stop it: it can be deleted outright."""
    return RANK[task.status.state] < _ASSIGNED


def created_ns(task: Task) -> int:
    try:
        return parse_ns(task.created_at)
    except ValueError:
        return 0


def status_ns(task: Task) -> int:
    """When the task last changed observed state."""
    try:
        return parse_ns(task.status.timestamp)
    except ValueError:
        return 0


def _age_key(task: Task) -> tuple[str, str]:
    return (task.created_at, task.id)


def newest(tasks: Iterable[Task]) -> Task:
    """The most recently created: the one that replaced the others."""
    return max(tasks, key=_age_key)


def latest(tasks: Iterable[Task]) -> Task:
    """The one whose state changed last: in a slot with nothing live, its fate is the slot's (swarmkit
    judges by status time too). A task created and stopped before it ever ran does not outrank the
    one that ran and then ended."""
    return max(tasks, key=lambda t: (status_ns(t), *_age_key(t)))


def oldest_first(tasks: Iterable[Task]) -> list[Task]:
    return sorted(tasks, key=_age_key)


def create(service: Service, *, slot: int = 0, node_id: str = "",
           desired: TaskState = TaskState.RUNNING, labels: dict[str, str] | None = None) -> Intent:
    """A new task on the service's current spec (and, for a job, its current iteration)."""
    task = Task(
        id=new_id(),
        labels=labels or {},
        spec=service.spec.task_template or TaskSpec(),
        spec_version=service.spec_version,
        service_id=service.id,
        service_name=service.spec.name,
        slot=slot,
        node_id=node_id,
        status=TaskStatus(state=TaskState.NEW, message="created"),
        desired_state=desired,
        job_iteration=service.job_status.job_iteration if service.job_status is not None else None,
        endpoint=service.endpoint,
    )
    return Intent(TaskCreated(task=task), expect_seq=0, expect_subject=subjects.task_all(task.node_id, task.id))


def _on(task: Task, event: TaskDesiredStateChanged | TaskRemoved | TaskStatusChanged) -> Intent:
    return Intent(event, expect_seq=task.version.index, expect_subject=subjects.task_all(task.node_id, task.id))


def set_desired(task: Task, desired: TaskState) -> Intent:
    return _on(task, TaskDesiredStateChanged(task_id=task.id, desired_state=desired))


def delete(task: Task) -> Intent:
    return _on(task, TaskRemoved(task_id=task.id))


def orphan(task: Task, message: str = ORPHANED_MESSAGE) -> Intent:
    """No agent will report this task again (its node was deleted, or has been down too long), so
    the managers close it."""
    status = msgspec.structs.replace(task.status, state=TaskState.ORPHANED, message=message, timestamp="")
    return _on(task, TaskStatusChanged(task_id=task.id, status=status))


def retire(task: Task, state: ClusterState) -> Intent | None:
    """A task whose slot or service is going away: delete it once nothing can still be running it
    (scaled-down and removed slots leave no history), otherwise tell its agent to remove it."""
    if has_stopped(task) or never_ran(task) or task.node_id not in state.nodes:
        return delete(task)
    if task.desired_state != TaskState.REMOVE:
        return set_desired(task, TaskState.REMOVE)
    return None


def retire_all(retiring: Iterable[Task], state: ClusterState) -> list[Intent]:
    return [i for t in retiring if (i := retire(t, state)) is not None]
