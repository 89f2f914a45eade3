"""Invariants of the orchestrator's `decide` under any sequence of cluster changes (hypothesis).

After every change the orchestrator decides (twice, to the same effect) and its decision is applied; then:
- deciding again on the result creates nothing and changes no live task (one pass is a complete
  decision: no duplicates); it may only prune history the first pass made prunable (a task stopped
  in a pass cannot also be deleted in it), and after a rollback the restored spec gets its own pass,
- a replicated service occupies exactly `replicas` slots, none with two tasks desired running, and
  has no more tasks desired running than `replicas` (except side by side during a start-first update),
- a global service has at most one task desired running per node.
"""

from __future__ import annotations

from collections import Counter

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.service import ContainerSpec, RestartPolicy, TaskSpec, UpdateConfig
from schemas.task import TaskState
from services.orchestrator.replicated import replicas
from tests.world import SECOND, World, summary

NODES = ("n1", "n2", "n3")
ACTIONS = ("scale", "fail", "complete", "start", "stop", "drain", "pause", "activate", "down", "ready", "tick",
           "update", "update-mon")

policies = st.builds(
    RestartPolicy,
    condition=st.sampled_from([None, "any", "on-failure", "none"]),
    delay=st.sampled_from([None, 0, 2 * SECOND]),
    max_attempts=st.sampled_from([None, 0, 2]),
)
updates = st.builds(UpdateConfig, parallelism=st.sampled_from([None, 0, 2]),
                    order=st.sampled_from([None, "start-first"]),
                    failure_action=st.sampled_from([None, "continue", "rollback"]))
steps = st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 11)), max_size=30)


def step(w: World, action: str, n: int) -> None:
    node = NODES[n % len(NODES)]
    live = [t for t in w.live() if t.status.state == TaskState.RUNNING]
    match action:
        case "scale":
            w.scale("web", n % 6)
        case "fail" | "complete" if live:
            w.report(live[n % len(live)].id, TaskState.FAILED if action == "fail" else TaskState.COMPLETE)
        case "start":
            _start(w, n)
        case "stop":
            _stop(w)
        case "drain" | "pause" | "activate":
            w.node_spec(node, availability="active" if action == "activate" else action)
        case "down" | "ready":
            w.node_status(node, action)
        case "tick":
            w.tick((0.5, 1, 2.5, 61)[n % 4])
        case "update" | "update-mon":
            sid = "web" if action == "update" else "mon"
            template = w.state.services[sid].spec.task_template
            assert template is not None
            w.update(sid, task_template=msgspec.structs.replace(template, container_spec=ContainerSpec(image=f"x:{n}")))


def _start(w: World, n: int) -> None:
    """The scheduler and agents: place unplaced live tasks on usable nodes and run desired-running ones."""
    usable = [x for x in NODES if w.state.nodes[x].status.state == "ready"
              and w.state.nodes[x].spec.availability == "active"]
    for i, t in enumerate(w.live()):
        if not t.node_id and usable:
            w.assign(t.id, usable[(n + i) % len(usable)])
        task = w.task(t.id)
        if task.node_id and task.desired_state == TaskState.RUNNING and task.status.state != TaskState.RUNNING:
            w.report(t.id, TaskState.RUNNING)


def _stop(w: World) -> None:
    """Agents on reachable nodes stop what they were told to stop."""
    for t in w.tasks():
        node = w.state.nodes.get(t.node_id)
        if (t.desired_state in (TaskState.SHUTDOWN, TaskState.REMOVE) and node is not None
                and node.status.state != "down" and t.status.state == TaskState.RUNNING):
            w.report(t.id, TaskState.SHUTDOWN)


def check_invariants(w: World) -> None:
    web = w.state.services["web"]
    members = [t for t in w.tasks("web") if t.desired_state != TaskState.REMOVE]
    assert len({t.slot for t in members}) == replicas(web)
    running = Counter(t.slot for t in members if t.desired_state == TaskState.RUNNING)
    config = web.spec.update_config
    side_by_side = 2 if config is not None and config.order == "start-first" else 1
    assert all(n <= side_by_side for n in running.values()), running
    status = web.update_status
    start_first_update = side_by_side == 2 and status is not None and status.state not in ("completed",
                                                                                           "rollback_completed")
    assert sum(running.values()) <= replicas(web) or start_first_update, (running, status)
    per_node = Counter(t.node_id for t in w.tasks("mon") if t.desired_state == TaskState.RUNNING)
    assert all(n == 1 for n in per_node.values()), per_node


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=policies, update=updates, initial=st.integers(0, 4), plan=steps)
def test_decisions_are_complete_and_keep_the_slot_invariants(policy: RestartPolicy, update: UpdateConfig,
                                                             initial: int, plan: list[tuple[str, int]]) -> None:
    w = World()
    for node in NODES:
        w.node(node)
    w.service("web", replicas=initial, template=TaskSpec(container_spec=ContainerSpec(image="x"),
                                                         restart_policy=policy), update_config=update)
    w.service("mon", global_=True)
    finish: list[tuple[str, int]] = [("tick", 3), ("start", 0)]
    for action, n in plan + finish:
        step(w, action, n)
        first = w.orchestrate()
        assert summary(w.orchestrate(), w.state) == summary(first, w.state)  # the same state, the same decision
        if ("service", "rollback") in summary(first, w.state):
            w.apply(first)
            first = w.orchestrate()  # a rolled-back spec is a new spec: it is decided for in its own pass
        w.apply_checked(first, action)
        check_invariants(w)
