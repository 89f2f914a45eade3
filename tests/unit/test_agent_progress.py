"""`next_step`: swarmkit's agent progression rules as a table, plus the invariant the worker relies on."""

from __future__ import annotations

import itertools

import pytest

from schemas.task import RANK, Task, TaskState, TaskStatus
from services.agent.executor import Container, Health, Phase, newer
from services.agent.progress import UNHEALTHY, Op, Step, failed, next_step

S = TaskState
CREATED, RUNNING, EXITED = Phase.CREATED, Phase.RUNNING, Phase.EXITED


def task(state: TaskState, desired: TaskState = S.RUNNING, message: str = "started") -> Task:
    return Task(id="t1", node_id="n1", status=TaskStatus(state=state, message=message), desired_state=desired)


def container(phase: Phase | None, exit_code: int = 0, health: Health = Health.NONE) -> Container | None:
    if phase is None:
        return None
    return Container(task_id="t1", node_id="n1", phase=phase, exit_code=exit_code, health=health)


def report(state: TaskState, message: str, err: str | None = None) -> Step:
    return Step(Op.REPORT, state, message, err)


TABLE: list[tuple[TaskState, TaskState, Phase | None, int, Step]] = [
    # state, desired, container phase, exit code -> step
    (S.ASSIGNED, S.RUNNING, None, 0, report(S.ACCEPTED, "accepted")),
    (S.NEW, S.RUNNING, None, 0, report(S.ACCEPTED, "accepted")),
    (S.ACCEPTED, S.RUNNING, None, 0, report(S.PREPARING, "preparing")),
    (S.PREPARING, S.RUNNING, None, 0, Step(Op.PREPARE, S.READY, "prepared")),
    (S.READY, S.RUNNING, CREATED, 0, report(S.STARTING, "starting")),
    (S.STARTING, S.RUNNING, CREATED, 0, Step(Op.START)),
    (S.RUNNING, S.RUNNING, RUNNING, 0, Step(Op.WAIT)),
    (S.RUNNING, S.RUNNING, EXITED, 0, report(S.COMPLETE, "finished")),
    (S.RUNNING, S.RUNNING, EXITED, 3, report(S.FAILED, "started", "task: non-zero exit (3)")),
    (S.RUNNING, S.RUNNING, EXITED, 137, report(S.FAILED, "started", "task: non-zero exit (137)")),
    (S.RUNNING, S.RUNNING, None, 0, report(S.FAILED, "started", "task: container not found")),
    # desired `ready`: prepare, then wait at READY
    (S.ASSIGNED, S.READY, None, 0, report(S.ACCEPTED, "accepted")),
    (S.ACCEPTED, S.READY, None, 0, report(S.PREPARING, "preparing")),
    (S.PREPARING, S.READY, None, 0, Step(Op.PREPARE, S.READY, "prepared")),
    (S.READY, S.READY, CREATED, 0, Step(Op.IDLE)),
    # jobs: desired `complete`
    (S.RUNNING, S.COMPLETE, EXITED, 0, report(S.COMPLETE, "finished")),
    (S.READY, S.COMPLETE, CREATED, 0, report(S.STARTING, "starting")),
    # past the desired state: nothing
    (S.STARTING, S.READY, CREATED, 0, Step(Op.IDLE)),
    # terminal: nothing, whatever the container
    (S.COMPLETE, S.RUNNING, EXITED, 0, Step(Op.IDLE)),
    (S.FAILED, S.RUNNING, EXITED, 1, Step(Op.IDLE)),
    (S.REJECTED, S.RUNNING, None, 0, Step(Op.IDLE)),
    # observed ahead of reported (a report lost in an agent crash): catch up one transition at a time
    (S.PREPARING, S.RUNNING, CREATED, 0, report(S.READY, "prepared")),
    (S.PREPARING, S.RUNNING, RUNNING, 0, report(S.READY, "prepared")),
    (S.READY, S.RUNNING, RUNNING, 0, report(S.STARTING, "starting")),
    (S.STARTING, S.RUNNING, RUNNING, 0, report(S.RUNNING, "started")),
    (S.STARTING, S.RUNNING, EXITED, 1, report(S.RUNNING, "started")),
    (S.STARTING, S.RUNNING, None, 0, Step(Op.START)),
    # desired shutdown / remove
    (S.ASSIGNED, S.SHUTDOWN, None, 0, report(S.SHUTDOWN, "shutdown")),
    (S.READY, S.SHUTDOWN, CREATED, 0, report(S.SHUTDOWN, "shutdown")),
    (S.RUNNING, S.SHUTDOWN, RUNNING, 0, Step(Op.STOP, S.SHUTDOWN, "shutdown")),
    (S.STARTING, S.SHUTDOWN, RUNNING, 0, Step(Op.STOP, S.SHUTDOWN, "shutdown")),
    (S.RUNNING, S.SHUTDOWN, EXITED, 143, report(S.SHUTDOWN, "shutdown")),
    (S.RUNNING, S.REMOVE, RUNNING, 0, Step(Op.STOP, S.SHUTDOWN, "shutdown")),
    (S.SHUTDOWN, S.SHUTDOWN, EXITED, 143, Step(Op.IDLE)),
    (S.SHUTDOWN, S.REMOVE, EXITED, 143, Step(Op.REMOVE)),
    (S.FAILED, S.REMOVE, EXITED, 1, Step(Op.REMOVE)),
    (S.SHUTDOWN, S.REMOVE, None, 0, Step(Op.IDLE)),
    # terminal by someone else's word (orphaned, rejected by the constraint enforcer) yet running: stop quietly
    (S.ORPHANED, S.SHUTDOWN, RUNNING, 0, Step(Op.STOP)),
    (S.REJECTED, S.REMOVE, RUNNING, 0, Step(Op.STOP)),
]


@pytest.mark.parametrize(("state", "desired", "phase", "exit_code", "expected"), TABLE)
def test_next_step(state: TaskState, desired: TaskState, phase: Phase | None, exit_code: int, expected: Step) -> None:
    assert next_step(task(state, desired), container(phase, exit_code)) == expected


@pytest.mark.parametrize(("state", "expected"), [
    (S.PREPARING, S.REJECTED), (S.ACCEPTED, S.REJECTED), (S.STARTING, S.FAILED), (S.RUNNING, S.FAILED),
])
def test_fatal_error_rejects_before_starting_and_fails_after(state: TaskState, expected: TaskState) -> None:
    step = failed(task(state, message="preparing"), "task: exec: \"x\": executable file not found in $PATH")
    assert step == report(expected, "preparing", "task: exec: \"x\": executable file not found in $PATH")


HEALTH_TABLE: list[tuple[TaskState, Phase, Health, Step]] = [
    # state, container phase, health -> step (desired running)
    (S.STARTING, RUNNING, Health.STARTING, Step(Op.WAIT)),
    (S.STARTING, RUNNING, Health.HEALTHY, report(S.RUNNING, "started")),
    (S.STARTING, RUNNING, Health.NONE, report(S.RUNNING, "started")),
    (S.STARTING, RUNNING, Health.UNHEALTHY, Step(Op.STOP, S.FAILED, "starting", UNHEALTHY)),
    (S.STARTING, EXITED, Health.NONE, report(S.RUNNING, "started")),
    (S.RUNNING, RUNNING, Health.HEALTHY, Step(Op.WAIT)),
    (S.RUNNING, RUNNING, Health.UNHEALTHY, Step(Op.STOP, S.FAILED, "starting", UNHEALTHY)),
]


@pytest.mark.parametrize(("state", "phase", "health", "expected"), HEALTH_TABLE)
def test_health_gates_running_and_unhealthy_fails(state: TaskState, phase: Phase, health: Health,
                                                   expected: Step) -> None:
    assert next_step(task(state, message="starting"), container(phase, health=health)) == expected


def test_health_does_not_hold_a_shutdown() -> None:
    step = next_step(task(S.STARTING, S.SHUTDOWN), container(RUNNING, health=Health.STARTING))
    assert step == Step(Op.STOP, S.SHUTDOWN, "shutdown")


AGENT_STATES = [s for s in S if s is not S.REMOVE]
DESIRED = [S.READY, S.RUNNING, S.COMPLETE, S.SHUTDOWN, S.REMOVE]
PHASES: list[Phase | None] = [None, CREATED, RUNNING, EXITED]


def test_every_report_moves_forward_and_every_walk_ends() -> None:
    """The worker loops over REPORT steps; this is what makes that loop finite and monotonic."""
    for state, desired, phase, code, health in itertools.product(AGENT_STATES, DESIRED, PHASES, (0, 1), Health):
        current = task(state, desired)
        for _ in range(len(S)):
            step = next_step(current, container(phase, code, health))
            if step.op is not Op.REPORT:
                break
            assert step.state is not None and RANK[step.state] > RANK[current.status.state], (state, desired, phase)
            current = task(step.state, desired, step.message)
        else:
            pytest.fail(f"no end to reports from {state}/{desired}/{phase}")


def test_stop_never_reports_below_a_terminal_state() -> None:
    for state, desired in itertools.product([S.COMPLETE, S.SHUTDOWN, S.FAILED, S.REJECTED, S.ORPHANED],
                                            [S.SHUTDOWN, S.REMOVE]):
        step = next_step(task(state, desired), container(RUNNING))
        assert step == Step(Op.STOP)


@pytest.mark.parametrize(("old", "new", "kept"), [
    (Health.STARTING, Health.HEALTHY, Health.HEALTHY),
    (Health.HEALTHY, Health.STARTING, Health.HEALTHY),
    (Health.HEALTHY, Health.UNHEALTHY, Health.UNHEALTHY),
    (Health.UNHEALTHY, Health.HEALTHY, Health.UNHEALTHY),
])
def test_a_late_health_observation_never_hides_a_later_one(old: Health, new: Health, kept: Health) -> None:
    first, second = container(RUNNING, health=old), container(RUNNING, health=new)
    assert first is not None and second is not None
    assert newer(first, second).health is kept
    exited = container(EXITED, 1)
    assert exited is not None and newer(exited, second) is exited


def test_a_health_event_keeps_the_inspected_pid() -> None:
    inspected = Container(task_id="t1", node_id="n1", phase=RUNNING, container_id="c1", pid=42, health=Health.STARTING)
    event = Container(task_id="t1", node_id="n1", phase=RUNNING, container_id="c1", health=Health.HEALTHY)
    assert newer(inspected, event) == Container(task_id="t1", node_id="n1", phase=RUNNING, container_id="c1", pid=42,
                                                health=Health.HEALTHY)
    assert newer(event, inspected) == newer(inspected, event)  # the event may come before start's inspect
