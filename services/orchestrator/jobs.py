"""Jobs (swarm-behaviour 2.4): tasks that run to completion instead of running forever.

A `ReplicatedJob` runs `TotalCompletions` tasks to `complete`, at most `MaxConcurrent` at a time, each
in its own slot in [0, TotalCompletions). A `GlobalJob` runs once on every node that was ready, active
and matching when the job was (re)started. Job tasks are created with desired `complete`; a task that
completed is never run again, one that failed follows the restart policy (`any` acts as `on-failure`,
since a completed task never restarts). Every update of the service starts a new iteration
(`JobStatus.JobIteration`, bumped by the fold): tasks of older iterations that are still going are
removed, finished ones stay as history.

One deliberate difference from swarmkit: a failed task the restart policy will not restart keeps its
slot (as it does for services), so `--restart-condition none` really means "do not run it again".
swarmkit's job reconciler frees that slot and starts a fresh task in it on its next pass.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from enum import Enum

from schemas.node import Node
from schemas.service import ReplicatedJob, Service
from schemas.task import RANK, Task, TaskState
from services.kernel import constraints
from services.kernel.ids import parse_ns
from services.kernel.reconcile import Decision
from services.kernel.state import ClusterState
from services.orchestrator import slots, tasks
from services.orchestrator.nodes import is_invalid, takes_new_tasks, wanted_constraints
from services.orchestrator.pacing import Pacing
from services.orchestrator.restart import RestartPolicy

_COMPLETE = RANK[TaskState.COMPLETE]


class Phase(Enum):
    """Where one slot of the current iteration stands."""

    ACTIVE = "active"
    """A task is on its way to completion (or waits out its restart delay)."""
    COMPLETE = "complete"
    STOPPED = "stopped"
    """Its last task ended and will not be run again."""


def limits(job: ReplicatedJob) -> tuple[int, int]:
    """(MaxConcurrent, TotalCompletions) with the Engine API's defaults: 1, and MaxConcurrent."""
    concurrent = 1 if job.max_concurrent is None else job.max_concurrent
    return concurrent, concurrent if job.total_completions is None else job.total_completions


def iteration(service: Service) -> int:
    return service.job_status.job_iteration.index if service.job_status is not None else 0


def task_iteration(task: Task) -> int:
    return task.job_iteration.index if task.job_iteration is not None else 0


def is_wanted(task: Task) -> bool:
    """Desired to run (ready, running or complete): a job task's desired state is `complete`."""
    return RANK[task.desired_state] <= _COMPLETE


def reconcile(state: ClusterState, service: Service, now_ns: int, history_default: int, pacing: Pacing,
              out: Decision) -> None:
    mode = service.spec.mode
    if mode is not None and mode.replicated_job is not None:
        _replicated(state, service, mode.replicated_job, now_ns, history_default, pacing, out)
    else:
        _global(state, service, now_ns, history_default, pacing, out)


def _members(state: ClusterState, service: Service, out: Decision) -> list[Task]:
    """The service's tasks that still belong to a slot; the rest (removed slots, and runs of an
    older iteration still going) are retired."""
    current = iteration(service)
    leaving = [t for t in state.tasks_of_service(service.id)
               if t.desired_state == TaskState.REMOVE or (task_iteration(t) != current and not tasks.has_stopped(t))]
    out.intents.extend(tasks.retire_all(leaving, state))
    gone = {t.id for t in leaving}
    return [t for t in state.tasks_of_service(service.id) if t.id not in gone]


def _replicated(state: ClusterState, service: Service, job: ReplicatedJob, now_ns: int, history_default: int,
                pacing: Pacing, out: Decision) -> None:
    """Never more than MaxConcurrent active, never more slots than TotalCompletions: each pass starts
    `min(MaxConcurrent - active, free slots)` tasks in the lowest free slots."""
    concurrent, total = limits(job)
    by_slot: defaultdict[int, list[Task]] = defaultdict(list)
    for task in _members(state, service, out):
        by_slot[task.slot].append(task)
    phases = {n: _slot(state, slots.Slot(service, n, "", members, start=TaskState.COMPLETE), iteration(service),
                       now_ns, history_default, out)
              for n, members in sorted(by_slot.items())}
    active = sum(1 for p in phases.values() if p is Phase.ACTIVE)
    free = [n for n in range(total) if phases.get(n) is None]
    for number in free[:pacing.grant(service.id, min(len(free), concurrent - active))]:
        out.intents.append(tasks.create(service, slot=number, desired=TaskState.COMPLETE))


def _global(state: ClusterState, service: Service, now_ns: int, history_default: int, pacing: Pacing,
            out: Decision) -> None:
    """One run per eligible node that existed when this iteration started (nodes that join later do
    not run it, as in swarmkit); tasks on drained or down nodes are shut down, not replaced."""
    wanted = wanted_constraints(service.spec.task_template)
    started_ns = _started_ns(service)
    by_node: defaultdict[str, list[Task]] = defaultdict(list)
    for task in _members(state, service, out):
        by_node[task.node_id].append(task)
    for node_id in sorted(set(state.nodes) | set(by_node)):
        node = state.nodes.get(node_id)
        members = by_node.get(node_id, [])
        if node is None:
            out.intents.extend(tasks.delete(t) for t in members)  # a deleted node's global tasks go with it
            continue
        can_run = constraints.match_all(wanted, node) and takes_new_tasks(node)
        slot = slots.Slot(service, 0, node_id, members, can_run=can_run, must_stop=is_invalid(node),
                          start=TaskState.COMPLETE)
        phase = _slot(state, slot, iteration(service), now_ns, history_default, out)
        if phase is None and can_run and _joined_before(node, started_ns) and pacing.grant(service.id, 1):
            out.intents.append(tasks.create(service, node_id=node_id, desired=TaskState.COMPLETE))


def _started_ns(service: Service) -> int:
    status = service.job_status
    try:
        return parse_ns(status.last_execution or "") if status is not None else 0
    except ValueError:
        return 0


def _joined_before(node: Node, started_ns: int) -> bool:
    try:
        return parse_ns(node.created_at) < started_ns
    except ValueError:
        return False


def _slot(state: ClusterState, slot: slots.Slot, current: int, now_ns: int, history_default: int,
          out: Decision) -> Phase | None:
    """Move one slot on; its phase in the current iteration (None: nothing of it yet)."""
    ours = [t for t in slot.members if task_iteration(t) == current]
    run = dataclasses.replace(slot, members=ours)
    phase, created = _advance(state, run, now_ns, out) if ours else (None, 0)
    out.intents.extend(tasks.orphan(t) for t in slot.members if not is_wanted(t) and slots.stranded(t, state))
    slots.prune(slot, created, history_default, out)
    return phase


def _advance(state: ClusterState, slot: slots.Slot, now_ns: int, out: Decision) -> tuple[Phase, int]:
    """(phase, tasks created) for a slot with tasks of the current iteration."""
    if any(t.status.state == TaskState.COMPLETE for t in slot.members):
        return Phase.COMPLETE, 0
    going = [t for t in slot.members if is_wanted(t)]
    if slot.must_stop:
        out.intents.extend(tasks.set_desired(t, TaskState.SHUTDOWN) for t in going)
        return Phase.STOPPED, 0
    healthy = [t for t in going if not slots.is_dead(t, state)]
    dead = [t for t in going if t not in healthy]
    if healthy:
        out.intents.extend(tasks.set_desired(t, TaskState.SHUTDOWN) for t in dead)
        others = [t for t in slot.members if t not in healthy]
        for t in healthy:
            if t.desired_state == TaskState.READY:
                slots.start_when_due(state, slot, t, others, now_ns, out)
        return Phase.ACTIVE, 0
    last = tasks.latest(dead or slot.members)
    if not (slot.can_run and RestartPolicy.of(last.spec).should_restart(last, slot.members, now_ns)):
        out.intents.extend(tasks.set_desired(t, TaskState.SHUTDOWN) for t in dead)
        return Phase.STOPPED, 0
    created = slots.restart(state, slot, dead, now_ns, out) if dead else slots.refill(slot, now_ns, out)
    return Phase.ACTIVE, created
