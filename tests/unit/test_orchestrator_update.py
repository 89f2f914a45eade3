"""Rolling update and rollback, against swarm-behaviour section 3. Each test names the rule it checks.

`progress` plays the scheduler and the agents between orchestrator passes, so an update can be
followed slot by slot as it would run in a cluster.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection

import msgspec
import pytest

from schemas.events import ServiceUpdated
from schemas.service import ContainerSpec, Placement, PullOptions, RestartPolicy, TaskSpec, UpdateConfig
from schemas.task import Task, TaskState
from services.orchestrator.update import is_dirty
from tests.world import SECOND, World, summary

NODES = ("n1", "n2", "n3")


def spec(image: str = "app:1", **placement: object) -> TaskSpec:
    return TaskSpec(container_spec=ContainerSpec(image=image), restart_policy=RestartPolicy(delay=0),
                    placement=Placement(**placement) if placement else None)  # type: ignore[arg-type]


def cluster(replicas: int = 3, update: UpdateConfig | None = None, rollback: UpdateConfig | None = None,
            global_: bool = False) -> tuple[World, str]:
    w = World()
    for n in NODES:
        w.node(n)
    sid = w.service("web", replicas=replicas, global_=global_, template=spec(), update_config=update,
                    rollback_config=rollback)
    progress(w)
    return w, sid


def progress(w: World, rounds: int = 1, fail: Collection[str] = ()) -> None:
    """Orchestrate, then let the scheduler and agents do their part, `rounds` times. Tasks whose
    image is in `fail` fail instead of running."""
    nodes = itertools.cycle(NODES)
    for _ in range(rounds):
        w.apply(w.orchestrate())
        for t in w.tasks():
            if t.desired_state == TaskState.RUNNING and t.status.state in (TaskState.NEW, TaskState.PENDING):
                if not t.node_id:
                    w.assign(t.id, next(nodes))
                failing = t.spec.container_spec is not None and t.spec.container_spec.image in fail
                w.report(t.id, TaskState.FAILED if failing else TaskState.RUNNING)
            elif t.desired_state in (TaskState.SHUTDOWN, TaskState.REMOVE) and t.status.state == TaskState.RUNNING:
                w.report(t.id, TaskState.SHUTDOWN)
        w.apply(w.orchestrate())


def settle(w: World, done: Callable[[], bool], rounds: int = 12, fail: Collection[str] = ()) -> int:
    """Progress until `done`; how many rounds it took."""
    for n in range(rounds):
        if done():
            return n
        progress(w, fail=fail)
    raise AssertionError(f"not done after {rounds} rounds: {images(w, 'web')} {status(w, 'web')}")


def in_flight(w: World, sid: str) -> int:
    """Slots whose new task is not running yet."""
    return len({t.slot or t.node_id for t in w.live(sid) if t.status.state != TaskState.RUNNING})


def images(w: World, sid: str) -> list[str]:
    """The image of each slot's task wanted running, by slot."""
    live = sorted((t for t in w.tasks(sid) if t.desired_state == TaskState.RUNNING), key=lambda t: (t.slot, t.node_id))
    return [t.spec.container_spec.image if t.spec.container_spec else "" for t in live]


def status(w: World, sid: str) -> tuple[str, str]:
    """(state, message) of the service's UpdateStatus; ("", "") when it has none."""
    s = w.state.services[sid].update_status
    return ("", "") if s is None else (s.state, s.message)


def test_changing_only_the_replica_count_updates_nothing() -> None:
    w, sid = cluster()
    w.scale(sid, 4)
    decision = summary(w.orchestrate(), w.state)
    assert [s[0] for s in decision] == ["created"]
    w.apply(w.orchestrate())
    assert status(w, sid) == ("", "")


def test_dirty_means_another_spec_unless_only_placement_changed_and_the_node_still_matches() -> None:
    w, sid = cluster(replicas=1)
    task = w.tasks(sid)[0]
    assert not is_dirty(task, w.state.services[sid], w.state)
    w.update(sid, task_template=spec(constraints=[f"node.id=={task.node_id}"]))
    assert not is_dirty(task, w.state.services[sid], w.state)
    w.update(sid, task_template=spec(constraints=["node.id==elsewhere"]))
    assert is_dirty(task, w.state.services[sid], w.state)
    w.update(sid, task_template=spec())
    assert not is_dirty(task, w.state.services[sid], w.state)
    w.update(sid, task_template=TaskSpec(container_spec=ContainerSpec(image="app:1"),
                                         restart_policy=RestartPolicy(delay=0), force_update=1))
    assert is_dirty(task, w.state.services[sid], w.state)


def test_new_registry_credentials_alone_leave_a_task_that_has_its_image_clean() -> None:
    w, sid = cluster(replicas=1)
    task = w.tasks(sid)[0]
    assert task.status.state is TaskState.RUNNING
    with_auth = spec()
    assert with_auth.container_spec is not None
    w.update(sid, task_template=msgspec.structs.replace(with_auth, container_spec=msgspec.structs.replace(
        with_auth.container_spec, pull_options=PullOptions(registry_auth="eyJ1c2VybmFtZSI6ImEifQ=="))))
    assert not is_dirty(task, w.state.services[sid], w.state)
    not_pulled = msgspec.structs.replace(task, status=msgspec.structs.replace(task.status, state=TaskState.ASSIGNED))
    assert is_dirty(not_pulled, w.state.services[sid], w.state)


def test_an_update_starts_one_slot_stop_first_by_default() -> None:
    w, sid = cluster()
    old = w.tasks(sid)[0]
    w.update(sid, task_template=spec("app:2"))
    decision = summary(w.orchestrate(), w.state)
    assert decision == [("update", "updating"), ("desired", old.id, "shutdown"), ("created", "1", "", "ready")]
    w.apply(w.orchestrate())
    assert status(w, sid) == ("updating", "update in progress")
    assert w.state.services[sid].update_status.started_at  # type: ignore[union-attr]


def test_stop_first_starts_the_new_task_once_the_old_one_stopped_without_restart_delay() -> None:
    w, sid = cluster(replicas=1)
    w.update(sid, task_template=TaskSpec(container_spec=ContainerSpec(image="app:2")))  # default 5 s delay
    old = w.tasks(sid)[0]
    w.apply(w.orchestrate())
    new = next(t for t in w.tasks(sid) if t.desired_state == TaskState.READY)
    assert w.orchestrate().intents == []
    w.report(old.id, TaskState.SHUTDOWN)
    assert summary(w.orchestrate(), w.state) == [("desired", new.id, "running")]


@pytest.mark.parametrize(("parallelism", "at_once"), [(None, 1), (1, 1), (2, 2), (0, 3)])
def test_parallelism_bounds_the_slots_in_flight(parallelism: int | None, at_once: int) -> None:
    w, sid = cluster(update=UpdateConfig(parallelism=parallelism) if parallelism is not None else None)
    w.update(sid, task_template=spec("app:2"))
    assert [s[0] for s in summary(w.orchestrate(), w.state)].count("created") == at_once
    most = 0
    for _ in range(8):
        progress(w)
        most = max(most, in_flight(w, sid))
    assert most <= at_once and images(w, sid) == ["app:2"] * 3


def test_slots_are_updated_in_keep_order() -> None:
    w, sid = cluster()
    w.update(sid, task_template=spec("app:2"))
    order = []
    for _ in range(8):
        w.apply(w.orchestrate())
        order += [t.slot for t in w.live(sid) if t.spec.container_spec and t.spec.container_spec.image == "app:2"
                  and t.slot not in order]
        progress(w)
    assert order == [1, 2, 3]


def test_delay_pauses_after_each_slot() -> None:
    w, sid = cluster(update=UpdateConfig(parallelism=1, delay=10 * SECOND))
    w.update(sid, task_template=spec("app:2"))
    settle(w, lambda: images(w, sid).count("app:2") == 1)
    progress(w, rounds=3)
    assert images(w, sid).count("app:2") == 1
    assert w.timers_ms(w.orchestrate()) == [10_000]
    w.tick(10)
    settle(w, lambda: images(w, sid).count("app:2") == 2, rounds=3)


def test_start_first_runs_the_new_task_before_stopping_the_old_one() -> None:
    w, sid = cluster(replicas=1, update=UpdateConfig(order="start-first"))
    old = w.tasks(sid)[0]
    w.update(sid, task_template=spec("app:2"))
    assert summary(w.orchestrate(), w.state) == [("update", "updating"), ("created", "1", "", "running")]
    w.apply(w.orchestrate())
    new = next(t for t in w.tasks(sid) if t.id != old.id)
    assert w.orchestrate().intents == []  # the new one is not running yet
    w.run(new.id, "n2")
    assert summary(w.orchestrate(), w.state) == [("desired", old.id, "shutdown")]


def test_the_update_completes_after_the_monitor_period() -> None:
    w, sid = cluster()
    w.update(sid, task_template=spec("app:2"))
    settle(w, lambda: images(w, sid) == ["app:2"] * 3)
    progress(w)
    assert status(w, sid) == ("updating", "update in progress")
    w.tick(5)
    settle(w, lambda: status(w, sid) == ("completed", "update completed"), rounds=2)
    assert w.state.services[sid].update_status.completed_at  # type: ignore[union-attr]


def failing_update(w: World, sid: str) -> Task:
    def failed() -> list[Task]:
        return [t for t in w.tasks(sid) if t.status.state == TaskState.FAILED]

    w.update(sid, task_template=spec("bad:1"))
    settle(w, lambda: bool(failed()), fail={"bad:1"})
    progress(w, fail={"bad:1"})
    return failed()[0]


def test_a_failure_pauses_the_update_by_default() -> None:
    w, sid = cluster()
    failed = failing_update(w, sid)
    assert status(w, sid) == ("paused", f"update paused due to failure or early termination of task {failed.id}")
    progress(w, rounds=3, fail={"bad:1"})
    assert images(w, sid).count("app:1") == 2  # nothing more was replaced


def test_a_user_update_resumes_a_paused_update() -> None:
    w, sid = cluster()
    failing_update(w, sid)
    w.update(sid, task_template=spec("app:3"))
    settle(w, lambda: images(w, sid) == ["app:3"] * 3)


def test_failure_action_continue_goes_on() -> None:
    w, sid = cluster(update=UpdateConfig(failure_action="continue"))
    w.update(sid, task_template=spec("bad:1"))
    settle(w, lambda: all(t.spec.container_spec and t.spec.container_spec.image == "bad:1" for t in w.live(sid)),
           fail={"bad:1"})
    assert status(w, sid) == ("updating", "update in progress")


def test_max_failure_ratio_tolerates_failures_up_to_it() -> None:
    w, sid = cluster(update=UpdateConfig(max_failure_ratio=0.5))
    failing_update(w, sid)
    assert status(w, sid) == ("updating", "update in progress")


def test_failure_action_rollback_brings_back_the_previous_spec() -> None:
    w, sid = cluster(update=UpdateConfig(failure_action="rollback"))
    w.update(sid, task_template=spec("bad:1"))
    settle(w, lambda: status(w, sid)[0] == "rollback_started", fail={"bad:1"})
    assert w.state.services[sid].spec.task_template == spec()
    settle(w, lambda: images(w, sid) == ["app:1"] * 3, fail={"bad:1"})
    w.tick(5)
    settle(w, lambda: status(w, sid) == ("rollback_completed", "rollback completed"), rounds=2)


def test_a_rollback_goes_by_the_rollback_config() -> None:
    w, sid = cluster(update=UpdateConfig(parallelism=1), rollback=UpdateConfig(parallelism=0))
    w.update(sid, task_template=spec("app:2"))
    settle(w, lambda: images(w, sid) == ["app:2"] * 3)
    w.fold(ServiceUpdated(service_id=sid, spec=w.state.services[sid].previous_spec, rollback=True))  # type: ignore[arg-type]
    assert [s[0] for s in summary(w.orchestrate(), w.state)].count("created") == 3


def test_a_failing_rollback_pauses_instead_of_rolling_back_again() -> None:
    w, sid = cluster(update=UpdateConfig(failure_action="rollback"))
    w.update(sid, task_template=spec("bad:1"))
    w.update(sid, task_template=spec("bad:2"))
    w.fold(ServiceUpdated(service_id=sid, spec=w.state.services[sid].previous_spec, rollback=True))  # type: ignore[arg-type]
    settle(w, lambda: status(w, sid)[0] != "rollback_started", fail={"bad:1"})
    state, message = status(w, sid)
    assert state == "rollback_paused" and message.startswith("rollback paused due to failure or early termination")


def test_a_global_service_updates_node_by_node() -> None:
    w, sid = cluster(global_=True)
    w.update(sid, task_template=spec("app:2"))
    most = 0
    for _ in range(8):
        progress(w)
        most = max(most, in_flight(w, sid))
    assert most == 1 and images(w, sid) == ["app:2"] * 3
    assert sorted(t.node_id for t in w.live(sid)) == list(NODES)


@pytest.mark.parametrize("order", ["stop-first", "start-first"])
def test_each_update_step_is_a_complete_decision(order: str) -> None:
    w, sid = cluster(update=UpdateConfig(parallelism=2, order=order))
    w.update(sid, task_template=spec("app:2"))
    for _ in range(6):
        first = w.orchestrate()
        w.apply(first)
        assert w.orchestrate().intents == []
        progress(w)
        w.tick(1)


def test_a_slot_never_runs_an_old_spec_task_beside_its_replacement_after_a_partly_written_pass() -> None:
    """Rule: stop-first, a slot has one task wanted running. A pass is written intent by intent, so a
    compare-and-set conflict can drop the old task's `shutdown` while its replacement is created; the
    next pass stops the old task instead of starting it beside the replacement."""
    w, sid = cluster(replicas=1)
    old = w.live(sid)[0]
    w.update(sid, task_template=spec("app:2"))
    w.apply(w.orchestrate())
    w.report(old.id, TaskState.SHUTDOWN)
    waiting = next(t for t in w.live(sid) if t.desired_state == TaskState.READY)
    w.fold(ServiceUpdated(service_id=sid, spec=w.state.services[sid].previous_spec, rollback=True))  # type: ignore[arg-type]
    rollback = w.orchestrate()
    assert summary(rollback, w.state) == [("desired", waiting.id, "shutdown"), ("created", "1", "", "running")]
    rollback.intents.pop(0)  # lost to a conflict: the agent reported on that task meanwhile
    w.apply(rollback)
    assert summary(w.orchestrate(), w.state) == [("desired", waiting.id, "shutdown")]


def test_monitor_a_new_task_that_fails_after_it_ran_is_an_update_failure() -> None:
    """Rule (swarm-behaviour 3.3): a task the update started that stops on its own within Monitor of
    running counts as a failure, even though it ran."""
    w, sid = cluster(update=UpdateConfig(monitor=10 * SECOND))
    w.update(sid, task_template=spec("app:2"))
    settle(w, lambda: images(w, sid).count("app:2") == 1)
    progress(w)
    first = next(t for t in w.live(sid) if t.spec.container_spec and t.spec.container_spec.image == "app:2"
                 and t.status.state == TaskState.RUNNING)
    w.tick(2)
    w.report(first.id, TaskState.FAILED)
    w.apply(w.orchestrate())
    assert status(w, sid) == ("paused", f"update paused due to failure or early termination of task {first.id}")


def test_divergence_a_failure_counts_during_the_whole_update_even_past_monitor() -> None:
    """Deliberate divergence (docs/orchestration/rolling-update.md): Swarm watches each new task for
    Monitor only; Shoal counts a new task's failure until the update completes."""
    w, sid = cluster(update=UpdateConfig(monitor=SECOND, delay=10 * SECOND))
    w.update(sid, task_template=spec("app:2"))
    settle(w, lambda: images(w, sid).count("app:2") == 1)
    first = next(t for t in w.live(sid) if t.spec.container_spec and t.spec.container_spec.image == "app:2")
    w.tick(5)  # past Monitor; the update still waits out its Delay before the next slot
    w.report(first.id, TaskState.FAILED)
    w.apply(w.orchestrate())
    assert status(w, sid)[0] == "paused"


def test_after_the_update_completed_a_failure_is_only_restarted() -> None:
    w, sid = cluster()
    w.update(sid, task_template=spec("app:2"))
    settle(w, lambda: images(w, sid) == ["app:2"] * 3)
    progress(w)
    w.tick(5)
    settle(w, lambda: status(w, sid) == ("completed", "update completed"), rounds=2)
    task = w.live(sid)[0]
    w.report(task.id, TaskState.FAILED)
    assert summary(w.orchestrate(), w.state) == [("desired", task.id, "shutdown"), ("created", "1", "", "running")]
    w.apply(w.orchestrate())
    assert status(w, sid) == ("completed", "update completed")


def test_start_first_a_new_task_that_fails_leaves_the_old_one_running() -> None:
    w, sid = cluster(replicas=1, update=UpdateConfig(order="start-first"))
    old = w.tasks(sid)[0]
    w.update(sid, task_template=spec("bad:1"))
    settle(w, lambda: status(w, sid)[0] == "paused", fail={"bad:1"})
    assert w.task(old.id).desired_state == TaskState.RUNNING
    assert w.task(old.id).status.state == TaskState.RUNNING


def test_a_user_update_during_a_start_first_replacement_shows_updating_until_it_completes() -> None:
    """Rule (swarm-behaviour 3.2/3.4): a user update clears UpdateStatus; while any slot still holds a
    task on an old spec the update is `updating` again, here a start-first pair still side by side."""
    w, sid = cluster(replicas=1, update=UpdateConfig(order="start-first"))
    old = w.tasks(sid)[0]
    w.update(sid, task_template=spec("app:2"))
    w.apply(w.orchestrate())
    w.update(sid)  # `docker service update web` with no change
    assert status(w, sid) == ("", "")
    assert summary(w.orchestrate(), w.state) == [("update", "updating")]
    w.apply(w.orchestrate())
    new = next(t for t in w.tasks(sid) if t.id != old.id)
    w.run(new.id, "n2")
    assert summary(w.orchestrate(), w.state) == [("desired", old.id, "shutdown")]
    w.apply(w.orchestrate())
    w.tick(5)
    settle(w, lambda: status(w, sid) == ("completed", "update completed"), rounds=2)


def test_divergence_a_restart_replacement_on_the_new_spec_counts_as_an_update_failure() -> None:
    """Deliberate divergence (docs/orchestration/rolling-update.md): Swarm counts only the tasks its
    updater created; Shoal counts every task on the new spec created since the update started, such
    as the restart replacement (which takes the current spec) of an old task in a slot not yet updated."""
    w, sid = cluster(update=UpdateConfig(delay=60 * SECOND))
    w.update(sid, task_template=spec("app:2"))
    settle(w, lambda: images(w, sid).count("app:2") == 1)
    progress(w)
    old = next(t for t in w.live(sid) if t.slot == 3)
    w.report(old.id, TaskState.FAILED)
    w.apply(w.orchestrate())
    replacement = next(t for t in w.live(sid) if t.slot == 3)
    assert replacement.spec == spec("app:2")
    w.run(replacement.id, "n3")
    w.report(replacement.id, TaskState.FAILED)
    w.apply(w.orchestrate())
    assert status(w, sid) == ("paused", f"update paused due to failure or early termination of task {replacement.id}")


def test_divergence_a_new_task_shut_down_by_a_drain_is_not_an_update_failure() -> None:
    """Deliberate divergence (docs/orchestration/rolling-update.md): Swarm also counts a new task that
    reaches `shutdown`; Shoal counts only ends of the task's own (complete, failed, rejected)."""
    w, sid = cluster()
    w.update(sid, task_template=spec("app:2"))
    settle(w, lambda: images(w, sid).count("app:2") == 1)
    progress(w)
    new = next(t for t in w.live(sid) if t.spec == spec("app:2") and t.status.state == TaskState.RUNNING)
    w.node_spec(new.node_id, availability="drain")
    progress(w, rounds=2)
    assert w.task(new.id).status.state == TaskState.SHUTDOWN
    assert status(w, sid) == ("updating", "update in progress")
