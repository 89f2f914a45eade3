"""Generic resources (`--generic-resource gpu=1`): parsed as dockerd parses a node's, counted per kind,
filtered and accounted like CPU and memory, with Swarm's pending message."""

from __future__ import annotations

import pytest

from schemas.service import (
    DiscreteResourceSpec,
    GenericResource,
    NamedResourceSpec,
    ResourceReservations,
    Resources,
    TaskSpec,
)
from schemas.task import TaskState
from services.kernel.placement import generic
from services.scheduler.decide import Scheduler
from tests.world import World


def gpus(n: int, kind: str = "gpu") -> TaskSpec:
    ask = [GenericResource(discrete_resource_spec=DiscreteResourceSpec(kind=kind, value=n))]
    return TaskSpec(resources=Resources(reservations=ResourceReservations(generic_resources=ask)))


def test_parse_reads_integers_as_counts_and_anything_else_as_a_name() -> None:
    assert generic.parse(["gpu=2", " ssd = GPU-x ", "fpga=0"]) == [
        GenericResource(discrete_resource_spec=DiscreteResourceSpec(kind="gpu", value=2)),
        GenericResource(named_resource_spec=NamedResourceSpec(kind="ssd", value="GPU-x")),
        GenericResource(discrete_resource_spec=DiscreteResourceSpec(kind="fpga", value=0)),
    ]


@pytest.mark.parametrize("bad", ["gpu", "=2", "gpu=", ""])
def test_parse_refuses_what_is_not_kind_equals_value(bad: str) -> None:
    with pytest.raises(ValueError, match="expected kind=count or kind=name"):
        generic.parse([bad])


@pytest.mark.parametrize(("advertised", "expected"), [
    (["gpu=2"], (("gpu", 2),)),
    (["gpu=GPU-0", "gpu=GPU-1", "gpu=GPU-2"], (("gpu", 3),)),
    (["gpu=1", "gpu=GPU-9", "ssd=4"], (("gpu", 2), ("ssd", 4))),
    (["gpu=0"], ()),
    ([], ()),
])
def test_units_counts_a_named_resource_as_one_and_a_discrete_one_as_its_value(
        advertised: list[str], expected: generic.Units) -> None:
    assert generic.units(generic.parse(advertised)) == expected


def schedule(w: World, sid: str) -> list[tuple[str, str | None]]:
    w.apply(w.decide(Scheduler()))
    return sorted((t.node_id, t.status.err) for t in w.tasks(sid))


def test_tasks_go_only_where_the_kind_is_free_and_the_rest_wait_with_swarms_message() -> None:
    w = World()
    w.node("n1", generic=["gpu=GPU-a", "gpu=GPU-b"])
    w.node("n2", generic=["gpu=1"])
    w.node("n3")
    sid = w.service("train", replicas=4, template=gpus(1))
    w.apply(w.orchestrate())
    assert schedule(w, sid) == [
        ("", "no suitable node (insufficient resources on 3 nodes)"),
        ("n1", None), ("n1", None), ("n2", None),
    ]


def test_a_kind_the_node_lacks_is_insufficient_even_with_others_free() -> None:
    w = World()
    w.node("n1", generic=["gpu=8"])
    sid = w.service("db", template=gpus(1, kind="ssd"))
    w.apply(w.orchestrate())
    assert schedule(w, sid) == [("", "no suitable node (insufficient resources on 1 node)")]


def test_units_free_again_when_a_task_stops_and_the_waiting_task_is_placed() -> None:
    w = World()
    w.node("n1", generic=["gpu=1"])
    sid = w.service("train", replicas=2, template=gpus(1))
    w.apply(w.orchestrate())
    scheduler = Scheduler()
    w.apply(w.decide(scheduler))
    running = next(t for t in w.tasks(sid) if t.node_id)
    w.report(running.id, TaskState.COMPLETE)
    w.apply(w.decide(scheduler, services=set(), nodes={"n1"}))
    assert sum(t.status.state == TaskState.ASSIGNED for t in w.tasks(sid)) == 1
    assert all(not t.status.err for t in w.tasks(sid) if t.status.state == TaskState.ASSIGNED)
