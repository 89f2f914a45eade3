"""What node availability and status changes do to a replicated service's tasks, against
swarm-behaviour 2.7 and 6.5. Each test names the rule it checks."""

from __future__ import annotations

from collections import Counter

from schemas.service import ContainerSpec, RestartPolicy, TaskSpec
from schemas.task import TaskState
from tests.world import SECOND, World, summary

NODES = ("n1", "n2", "n3")


def running(replicas: int = 3, delay: int = 0) -> tuple[World, str]:
    w = World()
    for n in NODES:
        w.node(n)
    sid = w.service("web", replicas=replicas, template=TaskSpec(container_spec=ContainerSpec(image="nginx"),
                                                                restart_policy=RestartPolicy(delay=delay)))
    w.apply(w.orchestrate())
    w.run_all(sid, NODES)
    return w, sid


def wanted_running_per_slot(w: World, sid: str) -> Counter[int]:
    return Counter(t.slot for t in w.tasks(sid) if t.desired_state == TaskState.RUNNING)


def test_pause_moves_nothing() -> None:
    w, _ = running()
    w.node_spec("n1", availability="pause")
    assert w.orchestrate(services=set(), nodes={"n1"}).intents == []
    assert w.orchestrate().intents == []


def test_a_task_failing_on_a_paused_node_is_replaced_for_the_scheduler_to_place_elsewhere() -> None:
    w, sid = running()
    w.node_spec("n1", availability="pause")
    task = next(t for t in w.tasks(sid) if t.node_id == "n1")
    w.report(task.id, TaskState.FAILED)
    assert summary(w.orchestrate(), w.state) == [("desired", task.id, "shutdown"),
                                                 ("created", str(task.slot), "", "running")]


def test_drain_tells_each_task_on_the_node_to_shut_down_and_replaces_it_in_its_slot() -> None:
    w, sid = running(replicas=6, delay=5 * SECOND)
    on_n1 = [t for t in w.tasks(sid) if t.node_id == "n1"]
    w.node_spec("n1", availability="drain")
    decision = summary(w.orchestrate(services=set(), nodes={"n1"}), w.state)
    assert sorted(decision) == sorted([("desired", t.id, "shutdown") for t in on_n1]
                                      + [("created", str(t.slot), "", "ready") for t in on_n1])


def test_a_node_back_from_down_keeps_its_stale_tasks_told_to_shut_down_and_gets_nothing_back() -> None:
    w, sid = running()
    stale = [t for t in w.tasks(sid) if t.node_id == "n1"]
    w.node_status("n1", "down")
    w.settle()
    w.tick(5)
    w.settle()
    w.run_all(sid, ("n2", "n3"))
    w.node_status("n1", "ready")
    assert w.orchestrate(services=set(), nodes={"n1"}).intents == []
    assert all(w.task(t.id).desired_state == TaskState.SHUTDOWN for t in stale)
    assert all(n == 1 for n in wanted_running_per_slot(w, sid).values())
    for t in stale:  # its agent, reachable again, stops them
        w.report(t.id, TaskState.SHUTDOWN)
    assert w.orchestrate().intents == []
    running_now = [t for t in w.tasks(sid) if t.status.state == TaskState.RUNNING]
    assert sorted(t.slot for t in running_now) == [1, 2, 3] and "n1" not in {t.node_id for t in running_now}


def test_a_node_back_from_down_gets_its_global_task_again_at_once() -> None:
    w = World()
    w.node("n1")
    sid = w.service("mon", global_=True)
    w.apply(w.orchestrate())
    w.run_all(sid, ["n1"])
    w.node_status("n1", "down")
    w.apply(w.orchestrate())
    w.node_status("n1", "ready")
    assert summary(w.orchestrate(services=set(), nodes={"n1"}), w.state) == [("created", "0", "n1", "running")]
