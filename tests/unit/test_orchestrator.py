"""The orchestrator's `decide` for replicated services, against swarm-behaviour sections 2.1, 2.2, 2.5
and 2.6. Each test names the rule it checks."""

from __future__ import annotations

import pytest

from schemas.events import TaskAssigned, TaskCreated
from schemas.service import ContainerSpec, RestartPolicy, TaskSpec
from schemas.task import TaskState
from services.kernel import subjects
from services.kernel.fold import apply
from services.orchestrator.decide import Settings
from services.orchestrator.tasks import ORPHANED_MESSAGE
from tests.events import envelope
from tests.world import SECOND, World, summary

NODES = ("n1", "n2", "n3")


def running(replicas: int = 3, template: TaskSpec | None = None, nodes: tuple[str, ...] = NODES) -> tuple[World, str]:
    """A cluster with `nodes` and one service whose tasks all run, spread round-robin."""
    w = World()
    for n in nodes:
        w.node(n)
    sid = w.service("web", replicas=replicas, template=template)
    w.apply(w.orchestrate())
    w.run_all(sid, nodes)
    return w, sid


def policy(**fields: object) -> TaskSpec:
    return TaskSpec(container_spec=ContainerSpec(image="nginx"), restart_policy=RestartPolicy(**fields))  # type: ignore[arg-type]


# -- replicated: counting slots ----------------------------------------------------------------


def test_create_without_replica_count_means_one_task_with_the_service_template() -> None:
    w = World()
    template = TaskSpec(container_spec=ContainerSpec(image="nginx:1"))
    sid = w.service("web", replicas=None, template=template)
    decision = w.orchestrate()
    assert summary(decision, w.state) == [("created", "1", "", "running")]
    intent = decision.intents[0]
    assert isinstance(intent.event, TaskCreated)
    task = intent.event.task
    assert (task.service_id, task.service_name, task.spec, task.spec_version) == (
        sid, "web", template, w.state.services[sid].spec_version)
    assert (task.status.state, task.status.message, task.node_id) == (TaskState.NEW, "created", "")
    assert intent.expect_seq == 0 and intent.expect_subject == f"shoal.evt.task.{task.id}.>"


@pytest.mark.parametrize(("replicas", "slots"), [(0, []), (1, ["1"]), (3, ["1", "2", "3"])])
def test_replicated_service_gets_slots_one_to_n(replicas: int, slots: list[str]) -> None:
    w = World()
    w.service("web", replicas=replicas)
    assert [s[1] for s in summary(w.orchestrate(), w.state)] == slots


def test_scale_up_fills_the_lowest_free_slots() -> None:
    w = World()
    for n in NODES:
        w.node(n)
    sid = w.service("web", replicas=4)
    w.apply(w.orchestrate())
    for task, node in zip(w.tasks(sid), ["n1", "n1", "n2", "n3"], strict=True):
        w.run(task.id, node)
    w.scale(sid, 3)
    w.apply(w.orchestrate())  # slot 2 is the second copy on n1: it goes
    w.report(next(t.id for t in w.tasks(sid) if t.slot == 2), TaskState.SHUTDOWN)
    w.apply(w.orchestrate())
    w.scale(sid, 5)
    assert sorted(s[1] for s in summary(w.orchestrate(), w.state)) == ["2", "5"]


@pytest.mark.parametrize(
    ("rule", "placement", "not_running", "scale_to", "removed_slots"),
    [
        ("most copies on one node go first", ["n1", "n1", "n2", "n3"], [], 3, [2]),
        ("non-running go before running", ["n1", "n2", "n3"], [1], 2, [1]),
        ("then the highest slots", ["n1", "n2", "n3"], [], 1, [2, 3]),
        ("down to zero removes every slot", ["n1", "n2", "n3"], [], 0, [1, 2, 3]),
    ],
)
def test_scale_down_order(rule: str, placement: list[str], not_running: list[int], scale_to: int,
                          removed_slots: list[int]) -> None:
    w = World()
    for n in NODES:
        w.node(n)
    sid = w.service("web", replicas=len(placement))
    w.apply(w.orchestrate())
    for task, node in zip(w.tasks(sid), placement, strict=True):
        w.assign(task.id, node)
        if task.slot not in not_running:
            w.report(task.id, TaskState.RUNNING)
    w.scale(sid, scale_to)
    decision = summary(w.orchestrate(), w.state)
    by_id = {t.id: t.slot for t in w.tasks(sid)}
    assert sorted(by_id[s[1]] for s in decision) == removed_slots, rule
    assert all(s[0] == "desired" and s[2] == "remove" for s in decision)


def test_scale_down_deletes_never_assigned_tasks_at_once_and_removed_tasks_once_stopped() -> None:
    w = World()
    w.node("n1")
    sid = w.service("web", replicas=2)
    w.apply(w.orchestrate())
    first, second = w.tasks(sid)
    w.run(first.id, "n1")
    w.scale(sid, 0)
    decision = w.orchestrate()
    assert sorted(summary(decision, w.state)) == [("desired", first.id, "remove"), ("removed", second.id)]
    scopes = {i.event.task_id: i.expect_subject for i in decision.intents if hasattr(i.event, "task_id")}
    assert scopes == {first.id: subjects.task_all("n1", first.id), second.id: subjects.task_all("", second.id)}
    w.apply(decision)
    w.report(first.id, TaskState.SHUTDOWN)
    assert summary(w.orchestrate(), w.state) == [("removed", first.id)]


def test_a_removal_that_raced_the_assignment_is_decided_again_where_the_task_now_is() -> None:
    """The server stores both writes (the waiting task's scope does not hold its assignment); the
    fold ignores the removal, and the next pass retires the task on its node."""
    w = World()
    w.node("n1")
    sid = w.service("web", replicas=1)
    w.apply(w.orchestrate())
    (task,) = w.tasks(sid)
    w.scale(sid, 0)
    stale = w.orchestrate()  # decided while the task still waits
    assert summary(stale, w.state) == [("removed", task.id)]
    w.fold(TaskAssigned(task=task, node_id="n1"))  # the scheduler's write is stored first
    for intent in stale.intents:
        apply(w.state, w.state.seq + 1, envelope(intent.event), subjects.task("", task.id, "desired"))
    assert (w.task(task.id).node_id, w.task(task.id).desired_state) == ("n1", TaskState.RUNNING)
    again = w.orchestrate()
    assert summary(again, w.state) == [("desired", task.id, "remove")]
    assert again.intents[0].expect_subject == subjects.task_all("n1", task.id)


def test_scale_down_leaves_no_history_of_the_removed_slot() -> None:
    w, sid = running(replicas=2, template=policy(delay=0))
    slot2 = next(t for t in w.tasks(sid) if t.slot == 2)
    w.report(slot2.id, TaskState.FAILED)
    w.apply(w.orchestrate())
    w.scale(sid, 1)
    w.settle()
    assert [t.slot for t in w.tasks(sid)] == [1]


def test_a_replacement_uses_the_spec_of_the_service_at_restart_time() -> None:
    w, sid = running(replicas=1, template=policy(delay=0))
    victim = w.tasks(sid)[0]
    w.update(sid, task_template=policy(delay=0, condition="on-failure"))
    w.report(victim.id, TaskState.FAILED)  # before the rolling update got to it
    created = [i.event.task for i in w.orchestrate().intents if isinstance(i.event, TaskCreated)]
    assert [(t.slot, t.spec) for t in created] == [(victim.slot, w.state.services[sid].spec.task_template)]
    assert created[0].spec_version == w.state.services[sid].spec_version


def test_decide_looks_only_at_what_was_touched() -> None:
    w, sid = running(replicas=1)
    w.report(w.tasks(sid)[0].id, TaskState.FAILED)
    assert w.orchestrate(services={"other"}, nodes=set()).intents == []
    assert w.orchestrate(services={sid}, nodes=set()).intents != []


# -- restart policy ----------------------------------------------------------------------------


def test_failed_task_is_replaced_in_its_slot_with_desired_ready_and_the_old_one_shut_down() -> None:
    w, sid = running(replicas=3)
    victim = next(t for t in w.tasks(sid) if t.slot == 2)
    w.report(victim.id, TaskState.FAILED, err="task: non-zero exit (1)")
    assert summary(w.orchestrate(), w.state) == [("desired", victim.id, "shutdown"), ("created", "2", "", "ready")]


def test_replacement_starts_after_the_restart_delay() -> None:
    w, sid = running(replicas=1, template=policy(delay=3 * SECOND))
    w.report(w.tasks(sid)[0].id, TaskState.FAILED)
    w.apply(w.orchestrate())
    replacement = w.live(sid)[0]
    w.tick(2.9)
    decision = w.orchestrate()
    assert decision.intents == [] and w.timers_ms(decision) == [100]
    w.tick(0.1)
    assert summary(w.orchestrate(), w.state) == [("desired", replacement.id, "running")]


def test_default_restart_delay_is_five_seconds() -> None:
    w, sid = running(replicas=1)
    w.report(w.tasks(sid)[0].id, TaskState.FAILED)
    w.apply(w.orchestrate())
    w.tick(4.99)
    assert w.orchestrate().intents == []
    w.tick(0.01)
    assert [s[2] for s in summary(w.orchestrate(), w.state)] == ["running"]


def test_zero_delay_replacement_is_created_running() -> None:
    w, sid = running(replicas=1, template=policy(delay=0))
    w.report(w.tasks(sid)[0].id, TaskState.FAILED)
    assert summary(w.orchestrate(), w.state)[1] == ("created", "1", "", "running")


@pytest.mark.parametrize(
    ("condition", "ended", "replaced"),
    [
        (None, TaskState.FAILED, True),
        ("any", TaskState.COMPLETE, True),
        ("any", TaskState.REJECTED, True),
        ("on-failure", TaskState.FAILED, True),
        ("on-failure", TaskState.COMPLETE, False),
        ("none", TaskState.FAILED, False),
        ("none", TaskState.COMPLETE, False),
    ],
)
def test_restart_condition(condition: str | None, ended: TaskState, replaced: bool) -> None:
    w, sid = running(replicas=1, template=policy(condition=condition))
    task = w.tasks(sid)[0]
    w.report(task.id, ended)
    decision = summary(w.orchestrate(), w.state)
    assert decision[0] == ("desired", task.id, "shutdown")
    assert (len(decision) == 2) is replaced


def test_a_dead_task_that_may_not_restart_keeps_its_slot() -> None:
    w, sid = running(replicas=2, template=policy(condition="none"))
    w.report(w.tasks(sid)[0].id, TaskState.COMPLETE)
    w.settle()
    assert len(w.tasks(sid)) == 2 and len(w.live(sid)) == 1


def test_max_attempts_limits_restarts_of_a_slot() -> None:
    w, sid = running(replicas=1, template=policy(delay=0, max_attempts=2))
    for attempt in range(3):
        task = w.live(sid)[0]
        w.run(task.id, "n1")
        w.report(task.id, TaskState.FAILED)
        created = [s for s in summary(w.orchestrate(), w.state) if s[0] == "created"]
        assert bool(created) is (attempt < 2), attempt
        w.settle()
    assert w.live(sid) == [] and len(w.tasks(sid)) == 3


def test_max_attempts_with_a_window_counts_only_recent_restarts() -> None:
    w, sid = running(replicas=1, template=policy(delay=0, max_attempts=1, window=10 * SECOND))
    first = w.live(sid)[0]
    w.report(first.id, TaskState.FAILED)
    w.settle()
    second = w.live(sid)[0]
    w.run(second.id, "n1")
    w.report(second.id, TaskState.FAILED)
    assert not [s for s in summary(w.orchestrate(), w.state) if s[0] == "created"]
    w.tick(11)
    assert [s for s in summary(w.orchestrate(), w.state) if s[0] == "created"]


def test_a_replacement_dying_before_its_delay_is_restarted_only_once_the_delay_passed() -> None:
    w, sid = running(replicas=1)
    w.report(w.tasks(sid)[0].id, TaskState.FAILED)
    w.apply(w.orchestrate())
    replacement = w.live(sid)[0]
    w.tick(1)
    w.assign(replacement.id, "n1")
    w.report(replacement.id, TaskState.REJECTED, err="No such image: busybox:doesnotexist")
    decision = w.orchestrate()
    assert decision.intents == [] and w.timers_ms(decision) == [4000]
    w.tick(4)
    assert summary(w.orchestrate(), w.state) == [("desired", replacement.id, "shutdown"), ("created", "1", "", "ready")]


def test_node_down_replaces_at_once_and_starts_after_the_delay_without_waiting_for_the_old_task() -> None:
    w, sid = running(replicas=3)
    on_n1 = [t for t in w.tasks(sid) if t.node_id == "n1"]
    w.node_status("n1", "down")
    decision = summary(w.orchestrate(services=set(), nodes={"n1"}), w.state)
    assert sorted(decision) == sorted([("desired", t.id, "shutdown") for t in on_n1]
                                      + [("created", str(t.slot), "", "ready") for t in on_n1])
    w.apply(w.orchestrate(services=set(), nodes={"n1"}))
    w.tick(5)
    promoted = summary(w.orchestrate(), w.state)
    assert [s[2] for s in promoted] == ["running"] * len(on_n1)
    assert w.task(on_n1[0].id).status.state == TaskState.RUNNING  # the old task keeps its last observed state


def test_drain_moves_tasks_without_delay_once_the_old_ones_stopped() -> None:
    w, sid = running(replicas=3)
    old = next(t for t in w.tasks(sid) if t.node_id == "n2")
    w.node_spec("n2", availability="drain")
    w.apply(w.orchestrate(services=set(), nodes={"n2"}))
    replacement = next(t for t in w.live(sid) if t.slot == old.slot)
    assert replacement.desired_state == TaskState.READY
    assert w.orchestrate().intents == []  # the old one still runs on the drained node
    w.report(old.id, TaskState.SHUTDOWN)
    assert summary(w.orchestrate(), w.state) == [("desired", replacement.id, "running")]


def test_a_replacement_waits_at_most_a_minute_for_the_old_task_to_stop() -> None:
    w, sid = running(replicas=1)
    old = w.tasks(sid)[0]
    w.node_spec("n1", availability="drain")
    w.apply(w.orchestrate())
    replacement = w.live(sid)[0]
    decision = w.orchestrate()
    assert decision.intents == [] and w.timers_ms(decision) == [60_000]
    w.tick(60)
    assert summary(w.orchestrate(), w.state) == [("desired", replacement.id, "running")]
    assert w.task(old.id).status.state == TaskState.RUNNING


def test_a_deleted_node_s_tasks_are_replaced_then_orphaned() -> None:
    from schemas.events import NodeRemoved

    w, sid = running(replicas=3)
    old = next(t for t in w.tasks(sid) if t.node_id == "n3")
    w.fold(NodeRemoved(node_id="n3"))
    first = summary(w.orchestrate(), w.state)
    assert sorted(first) == sorted([("desired", old.id, "shutdown"), ("created", str(old.slot), "", "ready")])
    w.apply(w.orchestrate())
    assert summary(w.orchestrate(), w.state) == [("status", old.id, "orphaned")]
    w.apply(w.orchestrate())
    assert w.task(old.id).status.message == ORPHANED_MESSAGE


# -- history and removal -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "restart", "settings", "kept"),
    [
        ("five tasks per slot by default", policy(delay=0), Settings(), 5),
        ("a configured limit", policy(delay=0), Settings(history_limit=3), 3),
        ("MaxAttempts + 1 when MaxAttempts is set", policy(delay=0, max_attempts=2, window=SECOND), Settings(), 3),
        ("negative keeps everything", policy(delay=0), Settings(history_limit=-1), 9),
    ],
)
def test_task_history_retention(rule: str, restart: TaskSpec, settings: Settings, kept: int) -> None:
    w, sid = running(replicas=1, template=restart)
    for _ in range(8):
        w.tick(2)
        task = w.live(sid)[0]
        w.run(task.id, "n1")
        w.report(task.id, TaskState.FAILED)
        w.apply(w.orchestrate(settings=settings))
        w.apply(w.orchestrate(settings=settings))
    assert len(w.tasks(sid)) == kept, rule
    assert len(w.live(sid)) == 1


def test_history_prunes_the_oldest_first() -> None:
    w, sid = running(replicas=1, template=policy(delay=0))
    first = w.tasks(sid)[0]
    for _ in range(5):
        w.tick(1)
        task = w.live(sid)[0]
        w.run(task.id, "n1")
        w.report(task.id, TaskState.FAILED)
        w.apply(w.orchestrate())
    assert first.id not in w.state.tasks and len(w.tasks(sid)) == 5


def test_removed_service_tasks_are_told_to_go_and_deleted_once_stopped() -> None:
    w = World()
    w.node("n1")
    sid = w.service("web", replicas=3, template=policy(delay=0))
    w.apply(w.orchestrate())
    a, b, c = w.tasks(sid)
    w.run(a.id, "n1")
    w.run(b.id, "n1")
    w.report(b.id, TaskState.FAILED)
    w.apply(w.orchestrate())
    history = b
    w.remove_service(sid)
    decision = sorted(summary(w.orchestrate(), w.state))
    replacement_b = next(t for t in w.live(sid) if t.slot == b.slot)
    assert decision == sorted([("desired", a.id, "remove"), ("removed", c.id), ("removed", history.id),
                               ("removed", replacement_b.id)])
    w.apply(w.orchestrate())
    w.report(a.id, TaskState.SHUTDOWN)
    assert summary(w.orchestrate(), w.state) == [("removed", a.id)]
    w.apply(w.orchestrate())
    assert w.tasks(sid) == []


# -- idempotence -------------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["create", "fail", "scale-up", "scale-down", "drain", "down", "remove"])
def test_deciding_again_after_applying_a_decision_proposes_nothing(change: str) -> None:
    w, sid = running(replicas=3)
    match change:
        case "create":
            w.service("api", replicas=2)
        case "fail":
            w.report(w.tasks(sid)[0].id, TaskState.FAILED)
        case "scale-up":
            w.scale(sid, 5)
        case "scale-down":
            w.scale(sid, 1)
        case "drain":
            w.node_spec("n1", availability="drain")
        case "down":
            w.node_status("n1", "down")
        case "remove":
            w.remove_service(sid)
    first = w.orchestrate()
    assert first.intents
    w.apply(first)
    assert w.orchestrate().intents == []
