"""The orchestrator's `decide` for global services, against swarm-behaviour sections 2.3 and 2.7."""

from __future__ import annotations

import pytest

from schemas.events import NodeRemoved
from schemas.service import ContainerSpec, Placement, RestartPolicy, TaskSpec
from schemas.task import TaskState
from tests.world import World, summary


def global_service(w: World, constraints: list[str] | None = None, delay: int | None = None) -> str:
    template = TaskSpec(container_spec=ContainerSpec(image="agent"),
                        placement=Placement(constraints=constraints) if constraints else None,
                        restart_policy=RestartPolicy(delay=delay) if delay is not None else None)
    return w.service("mon", global_=True, template=template)


def running_global(nodes: tuple[str, ...] = ("n1", "n2"), delay: int | None = None) -> tuple[World, str]:
    w = World()
    for n in nodes:
        w.node(n)
    sid = global_service(w, delay=delay)
    w.apply(w.orchestrate())
    w.run_all(sid, nodes)
    return w, sid


@pytest.mark.parametrize(
    ("rule", "node", "eligible"),
    [
        ("ready and active", {}, True),
        ("drained nodes get none", {"availability": "drain"}, False),
        ("paused nodes get none", {"availability": "pause"}, False),
        ("down nodes get none", {"status": "down"}, False),
        ("nodes not ready get none", {"status": "unknown"}, False),
        ("nodes must match the constraints", {"labels": {"zone": "us"}}, False),
        ("matching labels are eligible", {"labels": {"zone": "eu"}}, True),
    ],
)
def test_one_task_per_eligible_node(rule: str, node: dict[str, object], eligible: bool) -> None:
    w = World()
    w.node("n1", labels=node.get("labels", {"zone": "eu"}),  # type: ignore[arg-type]
           availability=str(node.get("availability", "active")))
    if "status" in node:
        w.node_status("n1", str(node["status"]))
    global_service(w, constraints=["node.labels.zone==eu"])
    expected = [("created", "0", "n1", "running")] if eligible else []
    assert summary(w.orchestrate(), w.state) == expected, rule


def test_a_joining_node_gets_its_task_from_a_node_only_pass() -> None:
    w, _ = running_global()
    w.node("n3")
    assert summary(w.orchestrate(services=set(), nodes={"n3"}), w.state) == [("created", "0", "n3", "running")]


@pytest.mark.parametrize("change", [{"availability": "drain"}, {"status": "down"}])
def test_drained_or_down_node_tasks_shut_down_without_replacement(change: dict[str, str]) -> None:
    w, sid = running_global()
    task = next(t for t in w.tasks(sid) if t.node_id == "n1")
    if "availability" in change:
        w.node_spec("n1", availability=change["availability"])
    else:
        w.node_status("n1", change["status"])
    assert summary(w.orchestrate(services=set(), nodes={"n1"}), w.state) == [("desired", task.id, "shutdown")]


def test_a_node_active_again_gets_a_task_at_once() -> None:
    w, sid = running_global()
    w.node_spec("n1", availability="drain")
    w.apply(w.orchestrate())
    w.report(next(t.id for t in w.tasks(sid) if t.node_id == "n1"), TaskState.SHUTDOWN)
    w.node_spec("n1", availability="active")
    assert summary(w.orchestrate(services=set(), nodes={"n1"}), w.state) == [("created", "0", "n1", "running")]


def test_a_relabelled_node_that_no_longer_matches_loses_its_task() -> None:
    w = World()
    w.node("n1", labels={"zone": "eu"})
    sid = global_service(w, constraints=["node.labels.zone==eu"])
    w.apply(w.orchestrate())
    w.run_all(sid, ["n1"])
    task = w.tasks(sid)[0]
    w.node_spec("n1", labels={"zone": "us"})
    assert summary(w.orchestrate(services=set(), nodes={"n1"}), w.state) == [("desired", task.id, "shutdown")]


def test_a_deleted_node_s_global_tasks_are_deleted() -> None:
    w, sid = running_global()
    task = next(t for t in w.tasks(sid) if t.node_id == "n2")
    w.fold(NodeRemoved(node_id="n2"))
    assert summary(w.orchestrate(), w.state) == [("removed", task.id)]


def test_a_failed_global_task_restarts_on_the_same_node() -> None:
    w, sid = running_global(delay=0)
    task = next(t for t in w.tasks(sid) if t.node_id == "n2")
    w.report(task.id, TaskState.FAILED)
    assert summary(w.orchestrate(), w.state) == [("desired", task.id, "shutdown"), ("created", "0", "n2", "running")]


def test_a_failed_global_task_on_a_paused_node_is_only_shut_down() -> None:
    w, sid = running_global()
    task = next(t for t in w.tasks(sid) if t.node_id == "n2")
    w.node_spec("n2", availability="pause")
    assert w.orchestrate().intents == []  # pause moves nothing
    w.report(task.id, TaskState.FAILED)
    assert summary(w.orchestrate(), w.state) == [("desired", task.id, "shutdown")]


def test_global_service_removed_retires_every_task() -> None:
    w, sid = running_global()
    w.remove_service(sid)
    assert sorted(s[2] for s in summary(w.orchestrate(), w.state)) == ["remove", "remove"]


def test_global_decision_is_idempotent_while_nodes_come_and_go() -> None:
    w, _ = running_global(("n1", "n2", "n3"))
    w.node("n4")
    w.node_spec("n2", availability="drain")
    w.node_status("n3", "down")
    first = w.orchestrate()
    assert len(first.intents) == 3
    w.apply(first)
    assert w.orchestrate().intents == []
