"""Rebalance (Shoal's answer to moby/moby#24103): an opted-in replicated service is evened out over
the nodes that can run it, one move at a time under its UpdateConfig, starting the new task before
stopping the old. Each test names the rule it checks."""

from __future__ import annotations

import pytest

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
