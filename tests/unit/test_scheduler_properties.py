"""Invariants of the scheduler under random clusters and changes (hypothesis), deciding incrementally
from the touched sets as the real loop does:
- no assignment violates a filter: reservations (CPU, memory, generic resources) fit the node,
  constraints hold, MaxReplicas holds, the node was ready and active;
- nothing that could be placed is left waiting (one pass places all it can);
- deciding again after applying a decision proposes nothing;
- the node tallies the scheduler keeps incrementally equal a fresh count.
"""

from __future__ import annotations

from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.service import (
    DiscreteResourceSpec,
    GenericResource,
    Placement,
    PlacementPreference,
    ResourceReservations,
    Resources,
    SpreadOver,
    TaskSpec,
)
from schemas.task import RANK, TaskState
from services.kernel.constraints import match_all, parse_all
from services.kernel.placement import filters
from services.kernel.placement.ask import Ask
from services.kernel.placement.generic import units
from services.kernel.placement.nodeinfo import tally
from services.scheduler.decide import Scheduler, is_waiting
from tests.world import GIB, SECOND, World

ZONES = ("eu", "us")

node_specs = st.fixed_dictionaries({
    "cpus": st.integers(0, 4),
    "memory": st.integers(0, 4),
    "zone": st.sampled_from(ZONES),
    "availability": st.sampled_from(["active", "active", "active", "drain", "pause"]),
    "down": st.booleans(),
    "gpus": st.integers(0, 3),
    "named": st.booleans(),
})
service_specs = st.fixed_dictionaries({
    "replicas": st.integers(0, 6),
    "cpus": st.sampled_from([0, 0.5, 1, 2]),
    "memory": st.sampled_from([0, 1, 3]),
    "zone": st.sampled_from([None, *ZONES]),
    "max_replicas": st.sampled_from([None, 1, 2]),
    "spread": st.booleans(),
    "gpus": st.sampled_from([0, 0, 1, 2]),
})
changes = st.lists(st.tuples(st.sampled_from(["fail", "finish", "scale", "join"]), st.integers(0, 20)), max_size=12)


def make_service(w: World, i: int, spec: dict[str, object]) -> str:
    zone = spec["zone"]
    template = TaskSpec(
        resources=Resources(reservations=ResourceReservations(nano_cpus=int(float(spec["cpus"]) * SECOND),  # type: ignore[arg-type]
                                                              memory_bytes=int(spec["memory"]) * GIB,  # type: ignore[call-overload]
                                                              generic_resources=gpus(int(spec["gpus"])))),  # type: ignore[call-overload]
        placement=Placement(constraints=[f"node.labels.zone=={zone}"] if zone else None,
                            max_replicas=spec["max_replicas"],  # type: ignore[arg-type]
                            preferences=[PlacementPreference(spread=SpreadOver(spread_descriptor="node.labels.zone"))]
                            if spec["spread"] else None),
    )
    return w.service(f"s{i}", replicas=int(spec["replicas"]), template=template)  # type: ignore[call-overload]


def gpus(n: int) -> list[GenericResource] | None:
    return [GenericResource(discrete_resource_spec=DiscreteResourceSpec(kind="gpu", value=n))] if n else None


def make_node(w: World, i: int, spec: dict[str, object]) -> None:
    """Half the nodes name their GPUs (one unit each), the others advertise a count."""
    count = int(spec.get("gpus", 0))  # type: ignore[call-overload]
    advertised = [f"gpu=GPU-{g}" for g in range(count)] if spec.get("named") else [f"gpu={count}"] if count else []
    node_id = w.node(f"n{i}", cpus=int(spec["cpus"]), memory=int(spec["memory"]) * GIB,  # type: ignore[call-overload]
                     labels={"zone": str(spec["zone"])}, availability=str(spec["availability"]), generic=advertised)
    if spec["down"]:
        w.node_status(node_id, "down")


def change(w: World, action: str, n: int) -> None:
    placed = [t for t in w.tasks() if t.status.state == TaskState.ASSIGNED]
    match action:
        case "fail" | "finish" if placed:
            w.report(placed[n % len(placed)].id, TaskState.FAILED if action == "fail" else TaskState.COMPLETE)
        case "scale" if w.state.services:
            services = sorted(w.state.services)
            w.scale(services[n % len(services)], n % 7)
        case "join":
            make_node(w, len(w.state.nodes) + 100, {"cpus": n % 5, "memory": n % 4, "zone": ZONES[n % 2],
                                                         "availability": "active", "down": False})


def schedule_touched(w: World, scheduler: Scheduler) -> int:
    """The orchestrator, then the scheduler, each deciding for what changed as the loops would; how
    many events scheduling wrote."""
    services, nodes = w.state.take_touched()
    w.apply(w.orchestrate(services, nodes))
    more_services, more_nodes = w.state.take_touched()
    decision = scheduler(w.state, services | more_services, nodes | more_nodes, w.now)
    w.apply(decision)
    return len(decision.intents)


def check_assignments(w: World) -> None:
    cpus: defaultdict[str, int] = defaultdict(int)
    memory: defaultdict[str, int] = defaultdict(int)
    gpu: defaultdict[str, int] = defaultdict(int)
    per_service: defaultdict[tuple[str, str], int] = defaultdict(int)
    for t in w.tasks():
        if not t.node_id or RANK[t.status.state] > RANK[TaskState.RUNNING]:
            continue
        node = w.state.nodes[t.node_id]
        assert node.status.state == "ready" and node.spec.availability == "active"
        placement = t.spec.placement
        assert match_all(parse_all(placement.constraints if placement else None), node)
        reservations = t.spec.resources.reservations if t.spec.resources else None
        cpus[t.node_id] += (reservations.nano_cpus or 0) if reservations else 0
        memory[t.node_id] += (reservations.memory_bytes or 0) if reservations else 0
        gpu[t.node_id] += dict(units(reservations.generic_resources if reservations else None)).get("gpu", 0)
        if RANK[t.desired_state] > RANK[TaskState.COMPLETE]:
            continue  # on its way out: no longer counts against MaxReplicas (as in swarmkit)
        per_service[(t.service_id, t.node_id)] += 1
        if placement and placement.max_replicas:
            assert per_service[(t.service_id, t.node_id)] <= placement.max_replicas
    for node_id, used in cpus.items():
        assert used <= w.state.nodes[node_id].description.resources.nano_cpus
    for node_id, used in memory.items():
        assert used <= w.state.nodes[node_id].description.resources.memory_bytes
    for node_id, used in gpu.items():
        assert used <= dict(units(w.state.nodes[node_id].description.resources.generic_resources)).get("gpu", 0)


def check_nothing_placeable_left(w: World) -> None:
    infos = [tally(w.state, node) for node in w.state.nodes.values()]
    for t in w.tasks():
        if is_waiting(t) and t.service_id in w.state.services:
            ask = Ask.of(t, w.state.services[t.service_id])
            pipeline = filters.enabled(ask)
            assert all(filters.rejection(pipeline, ask, i) is not None for i in infos), t
            assert t.status.state == TaskState.PENDING and t.status.err


def check_tallies_are_exact(w: World, scheduler: Scheduler) -> None:
    """What the scheduler keeps up to date incrementally equals a fresh count of the log's state."""
    for node_id, kept in scheduler.infos.items():
        fresh = tally(w.state, w.state.nodes[node_id])
        assert (kept.nano_cpus, kept.memory_bytes, +kept.generic, kept.active, +kept.active_by_service,
                kept.host_ports) == (fresh.nano_cpus, fresh.memory_bytes, +fresh.generic, fresh.active,
                                     +fresh.active_by_service, fresh.host_ports), node_id


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=st.lists(node_specs, max_size=5), services=st.lists(service_specs, max_size=4), plan=changes)
def test_assignments_respect_every_filter_and_leave_nothing_placeable(
        nodes: list[dict[str, object]], services: list[dict[str, object]], plan: list[tuple[str, int]]) -> None:
    w = World()
    for i, spec in enumerate(nodes):
        make_node(w, i, spec)
    for i, spec in enumerate(services):
        make_service(w, i, spec)
    scheduler = Scheduler()
    w.apply(w.orchestrate())
    w.state.take_touched()
    w.apply(w.decide(scheduler))  # the full pass at start
    finish: list[tuple[str, int]] = [("join", 0)]
    for action, n in [("start", 0), *plan, *finish]:
        change(w, action, n)
        schedule_touched(w, scheduler)
        check_assignments(w)
        check_nothing_placeable_left(w)
        check_tallies_are_exact(w, scheduler)
        assert schedule_touched(w, scheduler) == 0
