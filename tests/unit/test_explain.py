"""`explain`: every node with the filter that rejects a task or its rank and score, computed with the
scheduler's own filters and ranking, so its first-ranked node is where the scheduler puts the task."""

from __future__ import annotations

import msgspec

from schemas.service import (
    Placement,
    PlacementPreference,
    ResourceReservations,
    Resources,
    SpreadOver,
    TaskSpec,
)
from schemas.task import TaskState
from services.api.app import ALL_ROUTES
from services.api.explain import Explanation, NodeVerdict, explain
from services.api.openapi import document
from services.scheduler.decide import Scheduler
from tests.world import GIB, World


def spec(memory: int = 0, constraints: list[str] | None = None, spread: str = "") -> TaskSpec:
    prefs = [PlacementPreference(spread=SpreadOver(spread_descriptor=spread))] if spread else None
    return TaskSpec(resources=Resources(reservations=ResourceReservations(memory_bytes=memory or None)),
                    placement=Placement(constraints=constraints, preferences=prefs))


def create(w: World, name: str, replicas: int, template: TaskSpec, scheduler: Scheduler | None = None) -> str:
    sid = w.service(name, replicas=replicas, template=template)
    w.apply(w.orchestrate())
    w.apply(w.decide(scheduler or Scheduler()))
    return sid


def by_node(e: Explanation) -> dict[str, NodeVerdict]:
    return {v.node_id: v for v in e.nodes}


def test_a_pending_task_lists_the_filter_that_stopped_each_node_and_why() -> None:
    w = World()
    w.node("down")
    w.node_status("down", "down")
    w.node("drained", availability="drain")
    w.node("small", memory=2 * GIB, labels={"zone": "eu"})
    w.node("us", memory=64 * GIB, labels={"zone": "us"})
    sid = create(w, "db", 1, spec(memory=16 * GIB, constraints=["node.labels.zone==eu"]))
    task = w.tasks(sid)[0]
    e = explain(w.state, task, w.now)
    assert (e.state, e.node_id, e.slot, e.service_name) == ("pending", "", 1, "db")
    assert e.message == ("no suitable node (2 nodes not available for new tasks; "
                         "insufficient resources on 1 node; scheduling constraints not satisfied on 1 node)")
    verdicts = by_node(e)
    assert {n: (v.filter, v.reason) for n, v in verdicts.items()} == {
        "down": ("not_available", "node is down and active"),
        "drained": ("not_available", "node is ready and drain"),
        "small": ("resources", "memory GiB: reserves 16, 2 free"),
        "us": ("constraints", "constraint node.labels.zone==eu not satisfied"),
    }
    assert not any(v.eligible or v.chosen or v.rank is not None for v in e.nodes)


def test_a_placed_task_is_chosen_on_its_node_and_the_others_are_ranked_by_spread() -> None:
    w = World()
    for n in ("n1", "n2", "n3"):
        w.node(n)
    create(w, "other", 2, spec())  # n1 and n2 get one each: n3 is the emptiest overall
    sid = create(w, "web", 3, spec())  # n3, then n1, then n2
    task = next(t for t in w.tasks(sid) if t.node_id == "n3")
    e = explain(w.state, task, w.now)
    assert e.node_id == "n3" and e.state == "assigned"
    assert [(v.node_id, v.rank, v.chosen) for v in e.nodes] == [("n3", 1, True), ("n1", 2, False),
                                                                ("n2", 3, False)]
    n3 = e.nodes[0].score
    assert (n3.service_tasks, n3.total_tasks, n3.recent_failures) == (0, 0, 0)  # itself left out of the tally
    n1 = e.nodes[1].score
    assert (n1.service_tasks, n1.total_tasks) == (1, 2)


def test_rank_one_is_where_the_scheduler_puts_the_next_task_with_preferences() -> None:
    w = World()
    w.node("a1", labels={"dc": "a"})
    w.node("a2", labels={"dc": "a"})
    w.node("b1", labels={"dc": "b"})
    sid = create(w, "web", 2, spec(spread="node.labels.dc"))
    w.scale(sid, 3)
    w.apply(w.orchestrate())
    waiting = next(t for t in w.tasks(sid) if not t.node_id)
    ranked = [v.node_id for v in explain(w.state, waiting, w.now).nodes]
    w.apply(w.decide(Scheduler()))
    assert ranked[0] == w.task(waiting.id).node_id
    assert ranked[0].startswith("a")  # one task in dc a, one in b: the tie goes to "a", then the empty node


def test_recent_failures_of_the_service_are_scored() -> None:
    w = World()
    w.node("n1")
    sid = create(w, "web", 1, spec())
    task = w.tasks(sid)[0]
    w.report(task.id, TaskState.FAILED)
    e = explain(w.state, w.task(task.id), w.now)
    assert e.nodes[0].score.recent_failures == 1 and e.nodes[0].chosen


def test_the_wire_shape_is_the_contract() -> None:
    w = World()
    w.node("n1")
    sid = create(w, "web", 1, spec())
    doc = msgspec.json.decode(msgspec.json.encode(explain(w.state, w.tasks(sid)[0], w.now)))
    assert list(doc) == ["Task", "ServiceID", "ServiceName", "Slot", "NodeID", "State", "Message", "Nodes"]
    assert list(doc["Nodes"][0]) == ["NodeID", "Hostname", "Eligible", "Filter", "Reason", "Rank", "Score", "Chosen"]
    assert doc["Nodes"][0]["Score"] == {"ServiceTasks": 0, "TotalTasks": 0, "RecentFailures": 0}
    assert doc["Nodes"][0]["Rank"] == 1 and doc["Nodes"][0]["Filter"] == ""


def test_the_openapi_document_describes_the_endpoint() -> None:
    doc = document(ALL_ROUTES)
    operation = doc["paths"]["/shoal/tasks/{id}/explain"]["get"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Explanation"}
    assert "404" in operation["responses"]
    node = doc["components"]["schemas"]["NodeVerdict"]["properties"]
    assert list(node) == ["NodeID", "Hostname", "Eligible", "Filter", "Reason", "Rank", "Score", "Chosen"]
