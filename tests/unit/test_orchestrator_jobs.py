"""The orchestrator's `decide` for jobs, against swarm-behaviour 2.4 (and 2.5 for their restarts).
Each test names the rule it checks."""

from __future__ import annotations

import msgspec
import pytest

from schemas.events import ServiceCreated, TaskCreated
from schemas.service import (
    ContainerSpec,
    GlobalJob,
    ReplicatedJob,
    ReplicatedService,
    RestartPolicy,
    ServiceMode,
    ServiceSpec,
    TaskSpec,
)
from schemas.task import Task, TaskState
from services.orchestrator.jobs import limits
from tests.world import SECOND, World, summary

NODES = ("n1", "n2", "n3")
S = TaskState


def job(w: World, name: str = "batch", *, concurrent: int | None = 2, total: int | None = 5,
        policy: RestartPolicy | None = None, global_: bool = False) -> str:
    mode = (ServiceMode(global_job=GlobalJob()) if global_
            else ServiceMode(replicated_job=ReplicatedJob(max_concurrent=concurrent, total_completions=total)))
    template = TaskSpec(container_spec=ContainerSpec(image="busybox"), restart_policy=policy)
    w.fold(ServiceCreated(service_id=name, spec=ServiceSpec(name=name, mode=mode, task_template=template)))
    return name


def cluster(*nodes: str) -> World:
    w = World()
    for n in nodes or NODES:
        w.node(n)
    return w


def step(w: World, sid: str = "batch") -> list[tuple[str, ...]]:
    """One orchestrator pass, applied; then the scheduler and agents start what it created."""
    decision = w.orchestrate()
    done = summary(decision, w.state)
    w.apply(decision)
    for t in w.tasks(sid):
        if t.desired_state == S.COMPLETE and t.status.state in (S.NEW, S.PENDING):
            w.run(t.id, t.node_id or "n1")
    return done


def active(w: World, sid: str = "batch") -> list[Task]:
    return [t for t in w.tasks(sid) if t.desired_state == S.COMPLETE and t.status.state == S.RUNNING]


def finish(w: World, sid: str = "batch", state: TaskState = S.COMPLETE) -> None:
    for t in active(w, sid):
        w.report(t.id, state)


# -- replicated jobs -------------------------------------------------------------------------------


@pytest.mark.parametrize(("concurrent", "total", "expected"), [(None, None, (1, 1)), (3, None, (3, 3)),
                                                                (None, 4, (1, 4)), (2, 5, (2, 5))])
def test_engine_api_defaults_max_concurrent_1_and_total_completions_max_concurrent(
        concurrent: int | None, total: int | None, expected: tuple[int, int]) -> None:
    assert limits(ReplicatedJob(max_concurrent=concurrent, total_completions=total)) == expected


def test_replicated_job_starts_max_concurrent_tasks_desired_complete_in_slots_from_zero() -> None:
    w = cluster()
    job(w)
    decision = w.orchestrate()
    assert summary(decision, w.state) == [("created", "0", "", "complete"), ("created", "1", "", "complete")]
    created = [i.event.task for i in decision.intents if isinstance(i.event, TaskCreated)]
    assert all(t.job_iteration is not None and t.job_iteration.index == 0 for t in created)


def test_replicated_job_runs_total_completions_max_concurrent_at_a_time_then_stops() -> None:
    w = cluster()
    job(w, concurrent=2, total=5)
    step(w)
    started = []
    for _ in range(5):
        assert len(active(w)) <= 2
        started.append(sorted(t.slot for t in active(w)))
        finish(w)
        step(w)
    assert started == [[0, 1], [2, 3], [4], [], []]
    assert sorted(t.slot for t in w.tasks("batch") if t.status.state == S.COMPLETE) == [0, 1, 2, 3, 4]
    assert w.orchestrate().intents == []


def test_completed_job_task_is_never_restarted_even_with_condition_any() -> None:
    w = cluster()
    job(w, concurrent=1, total=1, policy=RestartPolicy(condition="any"))
    step(w)
    finish(w)
    assert summary(w.orchestrate(), w.state) == []


def test_failed_job_task_is_replaced_in_its_slot_ready_then_complete_after_the_delay() -> None:
    w = cluster()
    job(w, concurrent=1, total=1, policy=RestartPolicy(delay=2 * SECOND))
    step(w)
    (first,) = active(w)
    w.report(first.id, S.FAILED)
    assert summary(w.orchestrate(), w.state) == [("desired", first.id, "shutdown"), ("created", "0", "", "ready")]
    w.apply(w.orchestrate())
    replacement = next(t for t in w.tasks("batch") if t.desired_state == S.READY)
    assert w.timers_ms(w.orchestrate()) == [2000]
    w.tick(2)
    assert summary(w.orchestrate(), w.state) == [("desired", replacement.id, "complete")]


def test_failed_job_task_counts_against_max_concurrent_until_replaced() -> None:
    w = cluster()
    job(w, concurrent=2, total=4, policy=RestartPolicy(delay=SECOND))
    step(w)
    w.report(active(w)[0].id, S.FAILED)
    created = [s for s in step(w) if s[0] == "created"]
    assert created == [("created", "0", "", "ready")]


def test_restart_condition_none_leaves_the_failed_slot_stopped_and_the_job_short() -> None:
    """Deliberate divergence (docs/orchestration/jobs.md): the slot keeps its failed task."""
    w = cluster()
    job(w, concurrent=1, total=2, policy=RestartPolicy(condition="none"))
    step(w)
    (first,) = active(w)
    w.report(first.id, S.FAILED)
    step(w)
    (second,) = active(w)
    assert (first.slot, second.slot) == (0, 1)
    finish(w)
    for _ in range(3):
        step(w)
    assert len(w.tasks("batch")) == 2 and not active(w)


def test_max_attempts_bounds_the_retries_of_a_job_slot() -> None:
    w = cluster()
    job(w, concurrent=1, total=1, policy=RestartPolicy(delay=0, max_attempts=2))
    step(w)
    for _ in range(4):
        finish(w, state=S.FAILED)
        step(w)
        step(w)
    assert [t.status.state for t in w.tasks("batch")] == [S.FAILED] * 3


def test_job_task_on_a_node_that_goes_down_is_replaced_elsewhere() -> None:
    w = cluster()
    job(w, concurrent=1, total=1)
    step(w)
    (first,) = active(w)
    w.node_status(first.node_id, "down")
    done = w.orchestrate(nodes=[first.node_id])
    assert summary(done, w.state) == [("desired", first.id, "shutdown"), ("created", "0", "", "ready")]


def test_update_starts_a_new_iteration_removing_the_runs_still_going() -> None:
    w = cluster()
    job(w, concurrent=2, total=3)
    step(w)
    finish(w)
    step(w)
    going = active(w)
    assert [t.slot for t in going] == [2]
    w.update("batch", labels={"run": "2"})
    status = w.state.services["batch"].job_status
    assert status is not None and status.job_iteration.index == 1 and status.last_execution
    done = w.orchestrate()
    assert summary(done, w.state) == [("desired", going[0].id, "remove"), ("created", "0", "", "complete"),
                                      ("created", "1", "", "complete")]
    created = [i.event.task for i in done.intents if isinstance(i.event, TaskCreated)]
    assert all(t.job_iteration is not None and t.job_iteration.index == 1 for t in created)


def test_fold_gives_jobs_a_job_status_and_other_services_none() -> None:
    w = cluster()
    job(w)
    w.service("web")
    batch = w.state.services["batch"]
    assert batch.job_status is not None and batch.job_status.job_iteration.index == 0
    assert batch.job_status.last_execution == batch.created_at
    assert w.state.services["web"].job_status is None
    w.update("web", mode=ServiceMode(replicated=ReplicatedService(replicas=2)))
    assert w.state.services["web"].job_status is None


def test_old_iteration_history_is_pruned_to_the_retention_limit() -> None:
    w = cluster()
    job(w, concurrent=1, total=1)
    for run in range(7):
        step(w)
        finish(w)
        w.update("batch", labels={"run": str(run)})
    step(w)
    step(w)  # history is pruned in the pass after the new run's task was created, as on task-create events
    assert len(w.tasks("batch")) == 5


# -- global jobs ---------------------------------------------------------------------------------


def test_global_job_runs_once_on_every_ready_active_node() -> None:
    w = cluster()
    w.node_spec("n3", availability="drain")
    job(w, global_=True)
    assert sorted(summary(w.orchestrate(), w.state)) == [("created", "0", "n1", "complete"),
                                                         ("created", "0", "n2", "complete")]
    step(w)
    finish(w)
    assert w.orchestrate().intents == []


def test_global_job_skips_nodes_that_joined_after_it_started_until_it_is_updated() -> None:
    w = cluster("n1")
    job(w, global_=True)
    step(w)
    w.node("n2")
    assert [s[2] for s in summary(w.orchestrate(), w.state)] == []
    finish(w)
    w.update("batch", labels={"again": "1"})
    assert sorted(s[2] for s in summary(w.orchestrate(), w.state) if s[0] == "created") == ["n1", "n2"]


def test_global_job_task_on_a_drained_node_is_shut_down_not_replaced() -> None:
    w = cluster()
    job(w, global_=True)
    step(w)
    victim = next(t for t in active(w) if t.node_id == "n2")
    w.node_spec("n2", availability="drain")
    assert summary(w.orchestrate(nodes=["n2"]), w.state) == [("desired", victim.id, "shutdown")]


def test_global_job_failure_is_restarted_on_the_same_node() -> None:
    w = cluster("n1")
    job(w, global_=True, policy=RestartPolicy(delay=0))
    step(w)
    w.report(active(w)[0].id, S.FAILED)
    created = [s for s in summary(w.orchestrate(), w.state) if s[0] == "created"]
    assert created == [("created", "0", "n1", "complete")]


def test_mode_is_kept_by_task_copies() -> None:
    """Tasks copy the template exactly as for services (the job mode lives in the service only)."""
    w = cluster()
    job(w)
    task = next(i.event.task for i in w.orchestrate().intents if isinstance(i.event, TaskCreated))
    assert task.spec == msgspec.structs.replace(w.state.services["batch"].spec.task_template or TaskSpec())
