"""The scheduler's `decide` against swarm-behaviour section 4: filters in Swarm's order, each saying why
it rejected a node; spread; the pending message; batching; retries when something changed."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import pytest

from schemas.events import TaskAssigned
from schemas.service import (
    EndpointSpec,
    Placement,
    PlacementPreference,
    Platform,
    PortConfig,
    ResourceReservations,
    Resources,
    SpreadOver,
    TaskSpec,
)
from schemas.task import TaskState
from services.kernel.reconcile import retouch
from services.scheduler.decide import Scheduler
from tests.world import GIB, SECOND, World, summary

CPU = SECOND  # one CPU in NanoCPUs


def template(cpus: float = 0, memory: int = 0, constraints: list[str] | None = None, max_replicas: int | None = None,
             platforms: list[Platform] | None = None) -> TaskSpec:
    reservations = ResourceReservations(nano_cpus=int(cpus * CPU) or None, memory_bytes=memory or None)
    return TaskSpec(resources=Resources(reservations=reservations),
                    placement=Placement(constraints=constraints, max_replicas=max_replicas, platforms=platforms))


def with_service(w: World, replicas: int = 1, name: str = "web", **spec: object) -> str:
    """A service whose tasks the orchestrator has created, waiting for the scheduler."""
    sid = w.service(name, replicas=replicas, template=template(**spec))  # type: ignore[arg-type]
    w.apply(w.orchestrate(services={sid}, nodes=set()))
    return sid


def schedule(w: World, scheduler: Scheduler | None = None, **scope: set[str]) -> list[tuple[str, ...]]:
    """One scheduling pass (a full one unless scoped), applied; what it decided."""
    decision = w.decide(scheduler or Scheduler(), scope.get("services"), scope.get("nodes"))
    w.apply(decision)
    return summary(decision, w.state)


def placed_on(w: World, sid: str) -> list[str]:
    return sorted(t.node_id for t in w.tasks(sid) if t.status.state == TaskState.ASSIGNED)


def pending_errors(w: World, sid: str) -> list[str | None]:
    return [t.status.err for t in w.tasks(sid) if t.status.state == TaskState.PENDING]


# -- spread ------------------------------------------------------------------------------------


def test_spread_puts_one_task_per_node_first() -> None:
    w = World()
    for n in ("n1", "n2", "n3"):
        w.node(n)
    sid = with_service(w, replicas=6)
    schedule(w)
    assert placed_on(w, sid) == ["n1", "n1", "n2", "n2", "n3", "n3"]


def test_assignment_carries_the_whole_task_and_compares_and_sets_on_it() -> None:
    w = World()
    w.node("n1")
    sid = with_service(w)
    task = w.tasks(sid)[0]
    decision = w.decide(Scheduler())
    (intent,) = decision.intents
    assert isinstance(intent.event, TaskAssigned)
    assert intent.event.node_id == "n1" and intent.event.task.node_id == "n1"
    assert intent.event.task.spec == task.spec and intent.event.task.service_name == "web"
    assert (intent.expect_seq, intent.expect_subject) == (task.version.index, f"shoal.evt.task.{task.id}.>")


def occupy(w: World, node: str, name: str, count: int) -> str:
    """A service with `count` tasks running on `node`."""
    sid = w.service(name, replicas=count)
    w.apply(w.orchestrate(services={sid}, nodes=set()))
    for t in w.tasks(sid):
        w.run(t.id, node)
    return sid


@pytest.mark.parametrize(
    ("rule", "existing", "expected"),
    [
        ("fewest tasks of the same service first", [("n1", "web", 1), ("n2", "db", 2)], "n2"),
        ("then fewest tasks overall", [("n1", "db", 2), ("n2", "cache", 1)], "n2"),
        ("then the node id, for a deterministic choice", [], "n1"),
    ],
)
def test_spread_ranking(rule: str, existing: list[tuple[str, str, int]], expected: str) -> None:
    w = World()
    for n in ("n1", "n2"):
        w.node(n)
    for node, name, count in existing:
        occupy(w, node, name, count)
    web = "web" if "web" in w.state.services else w.service("web", replicas=0)
    w.scale(web, len(w.tasks(web)) + 1)
    w.apply(w.orchestrate(services={web}, nodes=set()))
    schedule(w)
    assert placed_on(w, web) == [expected], rule


def test_nodes_where_the_service_failed_five_times_recently_rank_last() -> None:
    w = World()
    w.node("n1")
    sid = with_service(w, replicas=1)
    scheduler = Scheduler()
    for _ in range(5):
        schedule(w, scheduler)
        task = w.live(sid)[0]
        assert task.node_id == "n1"
        w.report(task.id, TaskState.RUNNING)
        w.report(task.id, TaskState.FAILED)
        w.apply(w.orchestrate(services={sid}, nodes=set()))
        w.tick(6)
        w.apply(w.orchestrate(services={sid}, nodes=set()))
        if not w.state.nodes.get("n2"):
            w.node("n2")
            occupy(w, "n2", "other", 1)  # n2 is busier: without the failures, n1 would win
    assert len(w.tasks(sid)) == 5  # history was pruned, the failures are remembered
    assert schedule(w, scheduler) == [("assigned", w.live(sid)[0].id, "n2")]
    w.tick(301)  # the failures age out of the 5-minute window
    w.scale(sid, 2)
    w.apply(w.orchestrate(services={sid}, nodes=set()))
    schedule(w, scheduler)
    assert placed_on(w, sid) == ["n1", "n2"]


# -- filters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "node", "ask", "err"),
    [
        ("ready: a down node takes nothing", {"status": "down"}, {}, "1 node not available for new tasks"),
        ("ready: a drained node takes nothing", {"availability": "drain"}, {},
         "1 node not available for new tasks"),
        ("ready: a paused node takes nothing", {"availability": "pause"}, {}, "1 node not available for new tasks"),
        ("resources: CPU", {"cpus": 1}, {"cpus": 2}, "insufficient resources on 1 node"),
        ("resources: memory", {"memory": GIB}, {"memory": 2 * GIB}, "insufficient resources on 1 node"),
        ("constraints: node.hostname", {}, {"constraints": ["node.hostname==other"]},
         "scheduling constraints not satisfied on 1 node"),
        ("constraints: node.role", {}, {"constraints": ["node.role==manager"]},
         "scheduling constraints not satisfied on 1 node"),
        ("constraints: node.labels", {"labels": {"zone": "us"}}, {"constraints": ["node.labels.zone==eu"]},
         "scheduling constraints not satisfied on 1 node"),
        ("constraints: engine.labels", {}, {"constraints": ["engine.labels.ssd==true"]},
         "scheduling constraints not satisfied on 1 node"),
        ("constraints: node.platform.arch is raw", {}, {"constraints": ["node.platform.arch==amd64"]},
         "scheduling constraints not satisfied on 1 node"),
        ("platforms: another OS", {}, {"platforms": [Platform(os="windows")]}, "unsupported platform on 1 node"),
        ("platforms: another architecture", {}, {"platforms": [Platform(architecture="arm64")]},
         "unsupported platform on 1 node"),
    ],
)
def test_a_filter_rejects_the_node_and_says_why(rule: str, node: dict[str, object], ask: dict[str, Any],
                                                  err: str) -> None:
    w = World()
    status = node.pop("status", None)
    w.node("n1", **node)  # type: ignore[arg-type]
    if status:
        w.node_status("n1", str(status))
    sid = with_service(w, **ask)
    assert schedule(w) == [("pending", w.tasks(sid)[0].id, f"no suitable node ({err})")], rule


@pytest.mark.parametrize(
    ("rule", "node", "ask"),
    [
        ("resources: exactly what is free fits", {"cpus": 2, "memory": GIB}, {"cpus": 2, "memory": GIB}),
        ("constraints: node.id", {}, {"constraints": ["node.id==n1"]}),
        ("constraints: values compare case-insensitively", {"labels": {"zone": "EU"}},
         {"constraints": ["node.labels.zone==eu"]}),
        ("constraints: a missing label is empty, so != matches", {}, {"constraints": ["node.labels.gpu!=yes"]}),
        ("constraints: engine.labels", {"engine_labels": {"ssd": "true"}},
         {"constraints": ["engine.labels.ssd==true"]}),
        ("constraints: node.platform.os", {}, {"constraints": ["node.platform.os==linux"]}),
        ("constraints: node.ip inside a CIDR", {"addr": "10.1.2.3"}, {"constraints": ["node.ip==10.1.0.0/16"]}),
        ("constraints: all must hold", {"role": "manager", "labels": {"zone": "eu"}},
         {"constraints": ["node.role==manager", "node.labels.zone!=us"]}),
        ("platforms: x86_64 is amd64", {"arch": "x86_64"}, {"platforms": [Platform(os="linux", architecture="amd64")]}),
        ("platforms: aarch64 is arm64", {"arch": "aarch64"}, {"platforms": [Platform(architecture="arm64")]}),
        ("platforms: empty fields match anything", {}, {"platforms": [Platform()]}),
        ("platforms: any one of them", {}, {"platforms": [Platform(os="windows"), Platform(os="linux")]}),
    ],
)
def test_a_filter_lets_a_matching_node_through(rule: str, node: dict[str, object], ask: dict[str, Any]) -> None:
    w = World()
    w.node("n1", **node)  # type: ignore[arg-type]
    sid = with_service(w, **ask)
    assert schedule(w) == [("assigned", w.tasks(sid)[0].id, "n1")], rule


def test_reservations_count_only_tasks_assigned_to_running() -> None:
    w = World()
    w.node("n1", cpus=2)
    done = with_service(w, replicas=1, name="done", cpus=2)
    w.run(w.tasks(done)[0].id, "n1")
    w.report(w.tasks(done)[0].id, TaskState.COMPLETE)
    busy = with_service(w, replicas=1, name="busy", cpus=1)
    w.run(w.tasks(busy)[0].id, "n1")
    web = with_service(w, replicas=2, cpus=1)
    schedule(w)
    assert placed_on(w, web) == ["n1"]
    assert pending_errors(w, web) == ["no suitable node (insufficient resources on 1 node)"]


def test_one_pass_never_over_commits_a_node() -> None:
    w = World()
    w.node("n1", cpus=4, memory=4 * GIB)
    w.node("n2", cpus=1, memory=4 * GIB)
    sid = with_service(w, replicas=6, cpus=1)
    schedule(w)
    assert placed_on(w, sid) == ["n1", "n1", "n1", "n1", "n2"]
    assert pending_errors(w, sid) == ["no suitable node (insufficient resources on 2 nodes)"]


def test_host_mode_ports_in_use_reject_the_node() -> None:
    w = World()
    w.node("n1")
    w.node("n2")
    ports = EndpointSpec(ports=[PortConfig(protocol="tcp", target_port=80, published_port=8080, publish_mode="host")])
    sid = w.service("web", replicas=3, template=template(), endpoint_spec=ports)
    w.apply(w.orchestrate())
    schedule(w)
    assert placed_on(w, sid) == ["n1", "n2"]
    assert pending_errors(w, sid) == ["no suitable node (host-mode port already in use on 2 nodes)"]


def test_max_replicas_per_node() -> None:
    w = World()
    w.node("n1")
    w.node("n2")
    sid = with_service(w, replicas=5, max_replicas=2)
    schedule(w)
    assert placed_on(w, sid) == ["n1", "n1", "n2", "n2"]
    assert pending_errors(w, sid) == ["no suitable node (max replicas per node limit exceed)"]


# -- pending -----------------------------------------------------------------------------------


def test_pending_message_counts_each_reason_highest_first() -> None:
    w = World()
    w.node("n1", cpus=1, labels={"zone": "eu"})
    w.node("n2", cpus=1, labels={"zone": "eu"})
    w.node("n3", cpus=8, labels={"zone": "us"})
    sid = with_service(w, cpus=2, constraints=["node.labels.zone==eu"])
    schedule(w)
    assert pending_errors(w, sid) == [
        "no suitable node (insufficient resources on 2 nodes; scheduling constraints not satisfied on 1 node)"]


def test_a_node_stops_at_its_first_failing_filter() -> None:
    w = World()
    w.node("n1", cpus=1, availability="drain", labels={"zone": "us"})
    w.node("n2", cpus=1, labels={"zone": "us"})
    sid = with_service(w, cpus=2, constraints=["node.labels.zone==eu"])
    schedule(w)
    assert pending_errors(w, sid) == [
        "no suitable node (1 node not available for new tasks; insufficient resources on 1 node)"]


def test_without_nodes_the_message_is_just_no_suitable_node() -> None:
    w = World()
    sid = with_service(w)
    schedule(w)
    assert pending_errors(w, sid) == ["no suitable node"]


def test_pending_is_written_only_when_the_reason_changes() -> None:
    w = World()
    w.node("n1", cpus=1)
    sid = with_service(w, cpus=2)
    scheduler = Scheduler()
    assert len(schedule(w, scheduler)) == 1
    assert schedule(w, scheduler) == []
    w.node("n2", availability="drain")
    assert [s[2] for s in schedule(w, scheduler, services=set(), nodes={"n2"})] == [
        "no suitable node (1 node not available for new tasks; insufficient resources on 1 node)"]
    assert pending_errors(w, sid)


def test_a_waiting_task_is_retried_when_a_big_enough_node_joins() -> None:
    w = World()
    w.node("n1", memory=GIB)
    sid = with_service(w, memory=500 * GIB)
    scheduler = Scheduler()
    schedule(w, scheduler)
    assert scheduler.pending() == {"resources": 1}
    w.node("big", memory=512 * GIB)
    assert schedule(w, scheduler, services=set(), nodes={"big"}) == [("assigned", w.tasks(sid)[0].id, "big")]
    assert scheduler.pending() == {}


def test_a_waiting_task_is_retried_when_resources_are_freed() -> None:
    w = World()
    w.node("n1", cpus=1)
    first = with_service(w, name="first", cpus=1)
    scheduler = Scheduler()
    schedule(w, scheduler)
    second = with_service(w, name="second", cpus=1)
    schedule(w, scheduler, services={second}, nodes=set())
    assert pending_errors(w, second) == ["no suitable node (insufficient resources on 1 node)"]
    w.report(w.tasks(first)[0].id, TaskState.FAILED)
    assert schedule(w, scheduler, services={first}, nodes={"n1"}) == [("assigned", w.tasks(second)[0].id, "n1")]


def test_an_assignment_the_log_refused_leaves_no_reservation_behind() -> None:
    """A placement counts on its node at once (so one pass never over-commits); if its append is
    refused (here: a deposed scheduler assigned the task elsewhere first), the node is free again."""
    w = World()
    w.node("n1", cpus=1)
    first = with_service(w, name="first", cpus=1)
    scheduler = Scheduler()
    refused = w.decide(scheduler)
    assert summary(refused, w.state) == [("assigned", w.tasks(first)[0].id, "n1")]
    w.node("n2", cpus=1)
    w.assign(w.tasks(first)[0].id, "n2")  # what made the log refuse it
    for intent in refused.intents:
        retouch(intent, w.state)  # as the loop does with a refused intent
    second = with_service(w, name="second", cpus=1)
    assert schedule(w, scheduler, services={second}, nodes={"n2"}) == [("assigned", w.tasks(second)[0].id, "n1")]


def test_tasks_of_removed_services_or_not_wanted_running_are_not_placed() -> None:
    w = World()
    w.node("n1")
    gone = with_service(w, name="gone")
    w.remove_service(gone)
    scaled = with_service(w, name="scaled", replicas=2)
    w.scale(scaled, 1)
    w.apply(w.orchestrate(services={scaled}, nodes=set()))  # never-assigned slot 2 is deleted
    stopping = with_service(w, name="stopping")
    w.apply(w.orchestrate(services={stopping}, nodes=set()))
    from schemas.events import TaskDesiredStateChanged

    w.fold(TaskDesiredStateChanged(task_id=w.tasks(stopping)[0].id, desired_state=TaskState.SHUTDOWN))
    assert [s[0] for s in schedule(w)] == ["assigned"]
    assert placed_on(w, scaled) == ["n1"]


# -- global (preassigned) tasks ----------------------------------------------------------------


def test_a_global_task_is_confirmed_on_its_own_node() -> None:
    w = World()
    w.node("n1")
    w.node("n2")
    sid = w.service("mon", global_=True)
    w.apply(w.orchestrate())
    schedule(w)
    assert placed_on(w, sid) == ["n1", "n2"]


def test_a_global_task_that_does_not_fit_its_node_waits_with_the_bare_explanation() -> None:
    w = World()
    w.node("n1", cpus=1)
    sid = w.service("mon", global_=True, template=template(cpus=2))
    w.apply(w.orchestrate())
    schedule(w)
    assert pending_errors(w, sid) == ["insufficient resources on 1 node"]


def test_global_tasks_count_against_the_node_before_others_are_placed() -> None:
    w = World()
    w.node("n1", cpus=2)
    mon = w.service("mon", global_=True, template=template(cpus=1))
    web = with_service(w, replicas=2, cpus=1)
    w.apply(w.orchestrate())
    schedule(w)
    assert placed_on(w, mon) == ["n1"] and placed_on(w, web) == ["n1"]


# -- placement preferences ---------------------------------------------------------------------


def spread_over(*descriptors: str, **ask: Any) -> TaskSpec:
    base = template(**ask)
    assert base.placement is not None
    return msgspec.structs.replace(base, placement=msgspec.structs.replace(
        base.placement, preferences=[PlacementPreference(spread=SpreadOver(spread_descriptor=d)) for d in descriptors]))


def dc_cluster(w: World) -> None:
    w.node("a1", labels={"dc": "a"})
    w.node("a2", labels={"dc": "a"})
    w.node("b1", labels={"dc": "b"})


def test_preference_spreads_evenly_over_label_values_before_nodes() -> None:
    w = World()
    dc_cluster(w)
    sid = w.service("web", replicas=4, template=spread_over("node.labels.dc"))
    w.apply(w.orchestrate())
    schedule(w)
    assert placed_on(w, sid) == ["a1", "a2", "b1", "b1"]


def test_preference_counts_the_tasks_already_there() -> None:
    w = World()
    dc_cluster(w)
    sid = w.service("web", replicas=2, template=spread_over("node.labels.dc"))
    w.apply(w.orchestrate())
    for t in w.tasks(sid):
        w.run(t.id, "b1")
    w.scale(sid, 4)
    w.apply(w.orchestrate())
    schedule(w)
    assert placed_on(w, sid) == ["a1", "a2"]


def test_a_node_without_the_label_is_a_branch_of_its_own() -> None:
    w = World()
    dc_cluster(w)
    w.node("x1")
    sid = w.service("web", replicas=3, template=spread_over("node.labels.dc"))
    w.apply(w.orchestrate())
    schedule(w)
    assert sorted(w.state.nodes[n].spec.labels.get("dc", "") for n in placed_on(w, sid)) == ["", "a", "b"]  # type: ignore[union-attr]


def test_nested_preferences_split_within_each_branch() -> None:
    w = World()
    for name, dc, rack in [("a1", "a", "1"), ("a2", "a", "1"), ("a3", "a", "2"), ("b1", "b", "1")]:
        w.node(name, labels={"dc": dc, "rack": rack})
    sid = w.service("web", replicas=4, template=spread_over("node.labels.dc", "node.labels.rack"))
    w.apply(w.orchestrate())
    schedule(w)
    assert Counter(placed_on(w, sid)) == Counter({"b1": 2, "a3": 1, "a1": 1})


def test_branches_whose_nodes_cannot_take_the_task_are_skipped() -> None:
    w = World()
    dc_cluster(w)
    sid = w.service("web", replicas=4, template=spread_over("node.labels.dc", constraints=["node.labels.dc==a"]))
    w.apply(w.orchestrate())
    schedule(w)
    assert placed_on(w, sid) == ["a1", "a1", "a2", "a2"]


def test_only_label_descriptors_are_honoured() -> None:
    w = World()
    dc_cluster(w)
    sid = w.service("web", replicas=3, template=spread_over("node.id"))
    w.apply(w.orchestrate())
    schedule(w)
    assert placed_on(w, sid) == ["a1", "a2", "b1"]


def test_a_pass_places_at_most_its_budget_and_the_rest_first_next_pass_without_a_pending_reason() -> None:
    w = World()
    w.node("n1")
    a = with_service(w, replicas=2, name="a")
    b = with_service(w, replicas=2, name="b")
    scheduler = Scheduler(budget=3)
    first = schedule(w, scheduler)
    assert [s[0] for s in first] == ["assigned"] * 3
    assert scheduler.deferred == [b] and not scheduler.pending()
    assert [t.status.err for t in w.tasks(b) if not t.node_id] == [None]  # deferred, not unplaceable
    second = schedule(w, scheduler, services=set(), nodes=set())  # nothing changed: the deferred go on
    assert [s[0] for s in second] == ["assigned"]
    assert placed_on(w, a) == ["n1", "n1"] and placed_on(w, b) == ["n1", "n1"]
    assert scheduler.deferred == []
