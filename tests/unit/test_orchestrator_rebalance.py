"""Rebalance (Shoal's answer to moby/moby#24103): an opted-in replicated service is evened out over
the nodes that can run it, one move at a time under its UpdateConfig, starting the new task before
stopping the old. Each test names the rule it checks."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import TaskCreated
from schemas.service import (
    ContainerSpec,
    Placement,
    PlacementPreference,
    RestartPolicy,
    SpreadOver,
    TaskSpec,
    UpdateConfig,
)
from schemas.task import Task, TaskState
from services.orchestrator.decide import Settings
from services.orchestrator.rebalance import FROM
from tests.world import SECOND, World, summary

S = TaskState
OPT_IN = {"shoal.rebalance": "true"}


def crowded(replicas: int = 4, labels: dict[str, str] | None = None, update: UpdateConfig | None = None,
            template: TaskSpec | None = None) -> World:
    """Every task of `web` runs on n1; then n2 joins."""
    w = World()
    w.node("n1")
    w.service("web", replicas=replicas, labels=OPT_IN if labels is None else labels, update_config=update,
              template=template or TaskSpec(container_spec=ContainerSpec(image="nginx")))
    w.apply(w.orchestrate())
    w.run_all("web", ["n1"])
    w.node("n2")
    return w


def running(w: World) -> list[Task]:
    return [t for t in w.tasks("web") if t.status.state == S.RUNNING and t.desired_state == S.RUNNING]


def spread(w: World) -> list[str]:
    return sorted(t.node_id for t in running(w))


def moves(w: World, settings: Settings | None = None, nodes: list[str] | None = None) -> list[tuple[str, ...]]:
    decision = w.orchestrate(nodes=nodes, settings=settings) if nodes else w.orchestrate(settings=settings)
    return [s for s in summary(decision, w.state) if s[0] == "created"]


def step(w: World, settings: Settings | None = None) -> None:
    """A pass, then the scheduler and agents: new tasks start where they were placed, stopped ones stop."""
    w.apply(w.orchestrate(settings=settings))
    for t in w.tasks("web"):
        if t.desired_state == S.RUNNING and t.status.state == S.NEW:
            w.run(t.id, t.node_id or "n1")
        elif t.desired_state == S.SHUTDOWN and t.status.state == S.RUNNING:
            w.report(t.id, S.SHUTDOWN)


def test_a_joining_node_gets_a_task_moved_to_it_started_first_in_the_same_slot() -> None:
    w = crowded()
    decision = w.orchestrate(nodes=["n2"])
    assert summary(decision, w.state) == [("created", "4", "n2", "running")]
    (created,) = [i.event.task for i in decision.intents if isinstance(i.event, TaskCreated)]
    old = next(t for t in w.tasks("web") if t.slot == 4)
    assert created.labels == {FROM: old.id}


def test_the_old_task_stops_only_once_the_new_one_runs_and_then_the_next_move_starts() -> None:
    w = crowded()
    w.apply(w.orchestrate(nodes=["n2"]))
    new = next(t for t in w.tasks("web") if t.labels)
    old = next(t for t in w.tasks("web") if t.slot == new.slot and t is not new)
    assert summary(w.orchestrate(), w.state) == []
    w.run(new.id, "n2")
    assert summary(w.orchestrate(), w.state) == [("desired", old.id, "shutdown"), ("created", "3", "n2", "running")]


def test_four_on_one_node_become_two_and_two_never_dropping_below_four_running() -> None:
    w = crowded()
    for _ in range(10):
        step(w)
        assert len(running(w)) >= 4
    assert spread(w) == ["n1", "n1", "n2", "n2"]
    assert w.orchestrate().intents == []


@pytest.mark.parametrize(("labels", "cluster_wide", "moved"), [
    ({}, False, False), (OPT_IN, False, True), ({}, True, True), ({"shoal.rebalance": "false"}, True, False),
])
def test_rebalance_is_opt_in_per_service_or_cluster_wide(labels: dict[str, str], cluster_wide: bool,
                                                         moved: bool) -> None:
    w = crowded(labels=labels)
    assert bool(moves(w, Settings(rebalance=cluster_wide), nodes=["n2"])) is moved


@pytest.mark.parametrize(("parallelism", "at_once"), [(None, 1), (1, 1), (2, 2), (0, 3)])
def test_moves_at_a_time_follow_update_parallelism(parallelism: int | None, at_once: int) -> None:
    w = crowded(replicas=6, update=UpdateConfig(parallelism=parallelism))
    assert len(moves(w, nodes=["n2"])) == at_once


def test_update_delay_spaces_the_moves() -> None:
    w = crowded(update=UpdateConfig(delay=10 * SECOND))
    step(w)
    step(w)
    assert spread(w) == ["n1", "n1", "n1", "n2"]
    decision = w.orchestrate()
    assert [s for s in summary(decision, w.state) if s[0] == "created"] == []
    assert 10_000 in w.timers_ms(decision)
    w.tick(10)
    assert len(moves(w)) == 1


def test_a_difference_of_one_is_even_enough() -> None:
    w = crowded(replicas=3)
    step(w)
    step(w)
    assert spread(w) == ["n1", "n1", "n2"]
    assert moves(w) == []


@pytest.mark.parametrize("change", ["drain", "pause", "down"])
def test_only_ready_active_nodes_receive_moves(change: str) -> None:
    w = crowded()
    if change == "down":
        w.node_status("n2", "down")
    else:
        w.node_spec("n2", availability=change)
    assert moves(w, nodes=["n2"]) == []


def test_a_node_returning_to_active_gets_its_share() -> None:
    w = crowded()
    w.node_spec("n2", availability="drain")
    w.apply(w.orchestrate())
    w.node_spec("n2", availability="active")
    assert moves(w, nodes=["n2"]) == [("created", "4", "n2", "running")]


def test_nodes_that_do_not_meet_the_constraints_get_nothing() -> None:
    template = TaskSpec(container_spec=ContainerSpec(image="nginx"),
                        placement=Placement(constraints=["node.hostname==host-n1"]))
    w = crowded(template=template)
    assert moves(w, nodes=["n2"]) == []


def test_services_with_placement_preferences_are_left_to_the_scheduler() -> None:
    preference = PlacementPreference(spread=SpreadOver(spread_descriptor="node.labels.zone"))
    w = crowded(template=TaskSpec(container_spec=ContainerSpec(image="nginx"),
                                  placement=Placement(preferences=[preference])))
    assert moves(w, nodes=["n2"]) == []


def test_max_replicas_per_node_caps_the_target() -> None:
    w = crowded(replicas=4, template=TaskSpec(container_spec=ContainerSpec(image="nginx"),
                                              placement=Placement(max_replicas=1)))
    step(w)
    step(w)
    step(w)
    assert spread(w).count("n2") == 1


def test_nothing_moves_while_the_service_is_not_settled() -> None:
    w = crowded()
    victim = running(w)[0]
    w.report(victim.id, S.FAILED)
    assert [s for s in moves(w) if s[2] == "n2"] == []


def test_nothing_moves_during_a_rolling_update() -> None:
    w = crowded()
    w.update("web", task_template=TaskSpec(container_spec=ContainerSpec(image="nginx:2")))
    w.apply(w.orchestrate())
    assert all(s[2] == "" for s in moves(w))


def test_a_failed_move_waits_the_restart_delay_before_the_next_try() -> None:
    w = crowded(template=TaskSpec(container_spec=ContainerSpec(image="nginx"),
                                  restart_policy=RestartPolicy(delay=3 * SECOND)))
    w.apply(w.orchestrate(nodes=["n2"]))
    new = next(t for t in w.tasks("web") if t.labels)
    w.assign(new.id, "n2")
    w.report(new.id, S.FAILED)
    decision = w.orchestrate()
    assert summary(decision, w.state) == [("desired", new.id, "shutdown")]
    w.apply(decision)
    assert moves(w) == [] and 3000 in w.timers_ms(w.orchestrate())
    w.tick(3)
    assert moves(w) == [("created", "4", "n2", "running")]


def test_deciding_twice_starts_no_second_move() -> None:
    w = crowded()
    w.apply(w.orchestrate(nodes=["n2"]))
    assert w.orchestrate().intents == []


# -- invariants under any sequence of changes (hypothesis) ---------------------------------------------
# A move starts only once the service is settled, which the orchestrator's own pass may just have made
# it (a scale-down, a dead task replaced): so the pass after it may start moves, and nothing else; the
# pass after that only prunes history; then nothing. No slot ever has more than two tasks wanted running.

ACTIONS = ("start", "stop", "fail", "join", "drain", "activate", "down", "ready", "tick", "scale")


def _act(w: World, action: str, n: int) -> None:
    nodes = sorted(w.state.nodes)
    node = nodes[n % len(nodes)]
    live = running(w)
    match action:
        case "start":
            usable = [x for x in nodes if w.state.nodes[x].status.state == "ready"
                      and w.state.nodes[x].spec.availability == "active"]
            for t in w.tasks("web"):
                if t.desired_state == S.RUNNING and t.status.state in (S.NEW, S.PENDING) and (t.node_id or usable):
                    w.run(t.id, t.node_id or usable[(n + t.slot) % len(usable)])
        case "stop":
            for t in w.tasks("web"):
                if t.desired_state in (S.SHUTDOWN, S.REMOVE) and t.status.state == S.RUNNING:
                    w.report(t.id, S.SHUTDOWN)
        case "fail" if live:
            w.report(live[n % len(live)].id, S.FAILED)
        case "join":
            w.node(f"j{n}")
        case "drain" | "activate":
            w.node_spec(node, availability="active" if action == "activate" else "drain")
        case "down" | "ready":
            w.node_status(node, action)
        case "tick":
            w.tick((0.5, 6, 61)[n % 3])
        case "scale":
            w.scale("web", n % 7)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parallelism=st.sampled_from([None, 0, 2]), plan=st.lists(
    st.tuples(st.sampled_from(ACTIONS), st.integers(0, 11)), max_size=30))
def test_rebalancing_settles_in_a_pass_after_the_orchestrators_own_and_keeps_one_move_per_slot(parallelism: int | None,
                                                                           plan: list[tuple[str, int]]) -> None:
    w = crowded(update=UpdateConfig(parallelism=parallelism),
                template=TaskSpec(container_spec=ContainerSpec(image="nginx"), restart_policy=RestartPolicy(delay=0)))
    for action, n in [*plan, ("start", 0)]:
        _act(w, action, n)
        first = w.orchestrate()
        w.apply(first)
        second = w.orchestrate()
        assert all((isinstance(i.event, TaskCreated) and i.event.task.labels) or s[0] == "removed"
                   for i, s in zip(second.intents, summary(second, w.state), strict=True)), (action, second)
        w.apply(second)
        late = summary(w.orchestrate(), w.state)
        assert all(s[0] == "removed" for s in late), (action, late)
        w.apply(w.orchestrate())
        assert w.orchestrate().intents == []
        wanted = Counter(t.slot for t in w.tasks("web") if t.desired_state == S.RUNNING)
        assert all(k <= 2 for k in wanted.values()), wanted


def test_removing_the_label_calls_off_a_move_that_is_not_running_yet() -> None:
    w = crowded()
    w.apply(w.orchestrate(nodes=["n2"]))
    new = next(t for t in w.tasks("web") if t.labels)
    w.update("web", labels={})
    assert summary(w.orchestrate(), w.state) == [("desired", new.id, "shutdown")]
