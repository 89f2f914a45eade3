"""Invariants of the jobs orchestrator under any sequence of cluster changes (hypothesis).

After every change the orchestrator decides and its decision is applied; then:
- never more than MaxConcurrent tasks of the current run are on their way (desired `complete`, not ended),
- never more than TotalCompletions completed tasks in the current run, at most one per slot, all in
  slots [0, TotalCompletions), and a completed slot is never run again,
- a global job has at most one task on its way per node,
- deciding again creates nothing and changes no task (it may only prune history the first pass made
  prunable), and a third pass proposes nothing.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import ServiceCreated
from schemas.service import (
    ContainerSpec,
    GlobalJob,
    ReplicatedJob,
    RestartPolicy,
    ServiceMode,
    ServiceSpec,
    TaskSpec,
)
from schemas.task import RANK, Task, TaskState
from services.orchestrator.jobs import iteration, limits, task_iteration
from tests.world import SECOND, World

NODES = ("n1", "n2", "n3")
ACTIONS = ("start", "complete", "fail", "tick", "down", "ready", "drain", "activate", "rerun", "join")
S = TaskState

policies = st.builds(RestartPolicy, condition=st.sampled_from([None, "any", "on-failure", "none"]),
                     delay=st.sampled_from([None, 0, 2 * SECOND]), max_attempts=st.sampled_from([None, 0, 2]))
jobs = st.builds(ReplicatedJob, max_concurrent=st.sampled_from([None, 0, 1, 2, 4]),
                 total_completions=st.sampled_from([None, 0, 1, 3, 6]))
steps = st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 11)), max_size=30)


def _going(w: World, service_id: str) -> list[Task]:
    run = iteration(w.state.services[service_id])
    return [t for t in w.tasks(service_id) if task_iteration(t) == run and t.desired_state == S.COMPLETE
            and RANK[t.status.state] <= RANK[S.RUNNING]]


def step(w: World, action: str, n: int) -> None:
    node = NODES[n % len(NODES)]
    going = [t for t in _going(w, "batch") + _going(w, "once") if t.status.state == S.RUNNING]
    match action:
        case "start":
            _start(w, n)
        case "complete" | "fail" if going:
            w.report(going[n % len(going)].id, S.COMPLETE if action == "complete" else S.FAILED)
        case "tick":
            w.tick((0.5, 2.5, 61)[n % 3])
        case "down" | "ready":
            w.node_status(node, action)
        case "drain" | "activate":
            w.node_spec(node, availability="active" if action == "activate" else action)
        case "rerun":
            w.update("batch" if n % 2 else "once", labels={"run": str(n)})
        case "join":
            w.node(f"late{n}")


def _start(w: World, n: int) -> None:
    """The scheduler and agents: place unplaced tasks on usable nodes, run what is wanted to complete."""
    usable = [x for x, node in w.state.nodes.items()
              if node.status.state == "ready" and node.spec.availability == "active"]
    for i, t in enumerate(w.tasks()):
        if t.desired_state != S.COMPLETE or t.status.state not in (S.NEW, S.PENDING):
            continue
        if not t.node_id and usable:
            w.assign(t.id, usable[(n + i) % len(usable)])
        if w.task(t.id).node_id:
            w.report(t.id, S.RUNNING)


def check_invariants(w: World) -> None:
    batch = w.state.services["batch"]
    assert batch.spec.mode is not None and batch.spec.mode.replicated_job is not None
    concurrent, total = limits(batch.spec.mode.replicated_job)
    assert len(_going(w, "batch")) <= concurrent
    run = iteration(batch)
    done = Counter(t.slot for t in w.tasks("batch") if task_iteration(t) == run and t.status.state == S.COMPLETE)
    assert sum(done.values()) <= total and all(n == 1 for n in done.values()), done
    assert all(0 <= t.slot < total for t in w.tasks("batch") if task_iteration(t) == run), w.tasks("batch")
    assert not {t.slot for t in _going(w, "batch")} & set(done), "a completed slot was run again"
    per_node = Counter(t.node_id for t in _going(w, "once"))
    assert all(n == 1 for n in per_node.values()), per_node


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=policies, job=jobs, plan=steps)
def test_jobs_never_exceed_their_limits_and_decisions_are_complete(policy: RestartPolicy, job: ReplicatedJob,
                                                                    plan: list[tuple[str, int]]) -> None:
    w = World()
    for node in NODES:
        w.node(node)
    template = TaskSpec(container_spec=ContainerSpec(image="x"), restart_policy=policy)
    w.fold(ServiceCreated(service_id="batch", spec=ServiceSpec(name="batch", task_template=template,
                                                               mode=ServiceMode(replicated_job=job))))
    w.fold(ServiceCreated(service_id="once", spec=ServiceSpec(name="once", task_template=template,
                                                              mode=ServiceMode(global_job=GlobalJob()))))
    for action, n in [*plan, ("tick", 2), ("start", 0)]:
        step(w, action, n)
        w.apply_checked(w.orchestrate(), action)
        check_invariants(w)
