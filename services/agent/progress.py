"""How the agent moves one task forward: swarmkit's `exec.Do`, as a pure function.

`next_step(task, container)` looks at the state the agent last reported, the desired state and what
the executor observes, and names one step. The shell (`worker.py`) performs it and reports the new
state. Because the decision depends only on those three values, an agent that restarts decides
again from the log and the executor's `list()` and neither repeats nor skips a report.

Rules (swarm-behaviour.md 1.3):
- desired >= shutdown: a running container is stopped; a task not yet terminal becomes `shutdown`;
  a terminal task whose desired state is `remove` has its container removed.
- a terminal task, or one already past its desired state, is left alone.
- assigned -> accepted -> preparing and ready -> starting only while below the desired state (so a
  task desired `ready` waits there); preparing -> ready, starting -> running and running -> exit
  proceed regardless.
- an observation ahead of the reported state (a report lost in an agent crash) is reported, one
  transition at a time, instead of redoing the work.
- health (1.3): `start` reports nothing itself; the container it returns decides. A container whose
  health check has not passed yet keeps the task `starting`; `healthy` (or no health check) makes it
  `running`; `unhealthy`, before or after that, stops the container and fails the task.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from schemas.task import RANK, Task, TaskState, is_terminal
from services.agent.executor import Container, Health, Phase

S = TaskState

UNHEALTHY = "dockerexec: unhealthy container"
"""Swarm's Err for a task whose container's health check failed."""


class Op(enum.Enum):
    IDLE = "idle"
    """Nothing to do until the task or its container changes."""
    WAIT = "wait"
    """The container runs; the executor's watch reports its exit."""
    REPORT = "report"
    """Report `state` now; no executor call."""
    PREPARE = "prepare"
    START = "start"
    STOP = "stop"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class Step:
    op: Op
    state: TaskState | None = None
    """The state to report once the operation succeeds (None: report nothing)."""
    message: str = ""
    err: str | None = None


IDLE = Step(Op.IDLE)
WAIT = Step(Op.WAIT)


def _report(state: TaskState, message: str, err: str | None = None) -> Step:
    return Step(Op.REPORT, state, message, err)


def next_step(task: Task, container: Container | None) -> Step:
    state, desired = task.status.state, task.desired_state
    if RANK[desired] >= RANK[S.SHUTDOWN]:
        return _wind_down(task, container)
    if is_terminal(state) or RANK[state] > RANK[desired]:
        return IDLE
    below = RANK[state] < RANK[desired]
    phase = container.phase if container is not None else None
    match state:
        case S.NEW | S.PENDING | S.ASSIGNED:
            return _report(S.ACCEPTED, "accepted") if below else IDLE
        case S.ACCEPTED:
            return _report(S.PREPARING, "preparing") if below else IDLE
        case S.PREPARING:
            return Step(Op.PREPARE, S.READY, "prepared") if phase is None else _report(S.READY, "prepared")
        case S.READY:
            return _report(S.STARTING, "starting") if below else IDLE
        case S.STARTING:
            if container is None or container.phase is Phase.CREATED:
                return Step(Op.START)
            if container.phase is Phase.RUNNING and container.health is Health.UNHEALTHY:
                return _unhealthy(task)
            if container.phase is Phase.RUNNING and container.health is Health.STARTING:
                return WAIT
            return _report(S.RUNNING, "started")
        case _:
            return _running(task, container)


def _running(task: Task, container: Container | None) -> Step:
    if container is None or container.phase is Phase.CREATED:
        return _report(S.FAILED, task.status.message, "task: container not found")
    if container.phase is Phase.RUNNING:
        return _unhealthy(task) if container.health is Health.UNHEALTHY else WAIT
    return _exited(task, container.exit_code)


def _unhealthy(task: Task) -> Step:
    """Swarm stops a container whose health check failed and reports the task failed (Message kept)."""
    return Step(Op.STOP, S.FAILED, task.status.message, UNHEALTHY)


def _wind_down(task: Task, container: Container | None) -> Step:
    running = container is not None and container.phase is Phase.RUNNING
    if is_terminal(task.status.state):
        # Terminal already (e.g. orphaned by a manager) yet still running: stop it, report nothing.
        if running:
            return Step(Op.STOP)
        if task.desired_state is S.REMOVE and container is not None:
            return Step(Op.REMOVE)
        return IDLE
    if running:
        return Step(Op.STOP, S.SHUTDOWN, "shutdown")
    return _report(S.SHUTDOWN, "shutdown")


def _exited(task: Task, exit_code: int) -> Step:
    """The report for a container that ended on its own. On failure the Message keeps its text."""
    if exit_code == 0:
        return _report(S.COMPLETE, "finished")
    return _report(S.FAILED, task.status.message, f"task: non-zero exit ({exit_code})")


def failed(task: Task, err: str) -> Step:
    """The report for a fatal executor error: rejected before starting, failed from starting on."""
    state = S.REJECTED if RANK[task.status.state] < RANK[S.STARTING] else S.FAILED
    return _report(state, task.status.message, err)
