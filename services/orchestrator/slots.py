"""One slot's life (swarm-behaviour 2.1, 2.5, 2.6): restart what died, start delayed replacements,
close tasks stranded on deleted nodes, and prune the slot's history.

A slot is the unit both modes share: (service, number) for replicated services, (service, node) for
global ones. Its members are its tasks except those already told to go away (desired `remove`).
A slot with members is occupied even when none is live: a task that died and may not be restarted
keeps its slot, which is how `none`/`on-failure`/MaxAttempts leave a service below its count.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from schemas.service import Service, TaskSpec
from schemas.task import RANK, Task, TaskState
from services.kernel.reconcile import Decision, Timer
from services.kernel.state import ClusterState
from services.orchestrator import tasks
from services.orchestrator.nodes import DOWN, is_invalid
from services.orchestrator.restart import STOP_WAIT_NS, RestartPolicy, history_limit

SlotKey = tuple[str, int | str]
"""(service id, slot number) for replicated tasks; (service id, node id) for global ones (slot 0)."""


def slot_key(task: Task) -> SlotKey:
    return (task.service_id, task.slot if task.slot else task.node_id)


@dataclass(frozen=True, slots=True)
class Slot:
    service: Service
    number: int
    """1..N for replicated services, 0 for global ones."""
    node_id: str
    """Where a new task goes: the node for a global slot, "" (the scheduler chooses) otherwise."""
    members: list[Task]
    can_run: bool = True
    """A task may be created or restarted here now (global: node ready, active and matching)."""
    must_stop: bool = False
    """No task may stay (global: node drained, down, or no longer matching the constraints)."""
    start: TaskState = TaskState.RUNNING
    """The desired state that starts a task: `running`, or `complete` for a job's."""


def reconcile(state: ClusterState, slot: Slot, now_ns: int, history_default: int, out: Decision,
              created: int = 0, replaced: Collection[str] = ()) -> None:
    """`created` and `replaced`: tasks the rolling update started, and told to stop, in this pass."""
    live = [t for t in slot.members if tasks.is_live(t)]
    if slot.must_stop:
        out.intents.extend(tasks.set_desired(t, TaskState.SHUTDOWN) for t in live)
    else:
        healthy = {t.id for t in live if not is_dead(t, state)}
        dead = [t for t in live if t.id not in healthy]
        if healthy:
            out.intents.extend(tasks.set_desired(t, TaskState.SHUTDOWN) for t in dead)
            others = [t for t in slot.members if t.id not in healthy or t.id in replaced]
            for t in live:
                if t.id in healthy and t.desired_state == TaskState.READY and t.id not in replaced:
                    start_when_due(state, slot, t, others, now_ns, out)
        elif dead:
            created += restart(state, slot, dead, now_ns, out)
        elif slot.members:
            created += refill(slot, now_ns, out)
    out.intents.extend(tasks.orphan(t) for t in slot.members if stranded(t, state))
    prune(slot, created, history_default, out)


def is_dead(task: Task, state: ClusterState) -> bool:
    return tasks.has_stopped(task) or (bool(task.node_id) and is_invalid(state.nodes.get(task.node_id)))


def restart(state: ClusterState, slot: Slot, dead: list[Task], now_ns: int, out: Decision) -> int:
    """Old task desired `shutdown` and its replacement in one batch, as swarmkit does in one transaction.
    A replacement that dies before its own delay expired waits that delay out (no tight loops)."""
    last = tasks.latest(dead)
    policy = RestartPolicy.of(last.spec)
    if last.desired_state == TaskState.READY:
        gate = tasks.created_ns(last) + policy.delay_ns
        if now_ns < gate:
            out.timers.append(Timer(gate, service_id=slot.service.id))
            return 0
    out.intents.extend(tasks.set_desired(t, TaskState.SHUTDOWN) for t in dead)
    if not (slot.can_run and policy.should_restart(last, slot.members, now_ns)):
        return 0
    held = held_until(state, slot.members, slot.service.spec.task_template, now_ns, now_ns)
    desired = slot.start if held is None else TaskState.READY
    out.intents.append(tasks.create(slot.service, slot=slot.number, node_id=slot.node_id, desired=desired))
    return 1


def refill(slot: Slot, now_ns: int, out: Decision) -> int:
    """Nothing live, nothing dying: a global node coming back (or a restart cut short by a crash).
    Start a task at once unless the policy says the last one stays dead."""
    last = tasks.latest(slot.members)
    if slot.can_run and RestartPolicy.of(last.spec).should_restart(last, slot.members, now_ns):
        out.intents.append(tasks.create(slot.service, slot=slot.number, node_id=slot.node_id, desired=slot.start))
        return 1
    return 0


def start_when_due(state: ClusterState, slot: Slot, task: Task, others: list[Task], now_ns: int,
                    out: Decision) -> None:
    held = held_until(state, others, task.spec, tasks.created_ns(task), now_ns)
    if held is None:
        out.intents.append(tasks.set_desired(task, slot.start))
    else:
        out.timers.append(Timer(held, service_id=slot.service.id))


def held_until(state: ClusterState, others: list[Task], spec: TaskSpec | None, born_ns: int,
                now_ns: int) -> int | None:
    """When a replacement born at `born_ns` may start (None: now): after its restart delay, and once
    the tasks it replaces have stopped (or their node is down, or a minute went by). A task replaced
    while healthy (its node drained, a rolling update) needs no restart delay. A replacement that may
    start at once is created `running`."""
    before = tasks.newest(others) if others else None
    on_purpose = before is not None and _replaced_on_purpose(before, state)
    due = born_ns + (0 if on_purpose else RestartPolicy.of(spec).delay_ns)
    waiting = any(_may_still_run(t, state) for t in others)
    if now_ns >= due and (not waiting or now_ns >= born_ns + STOP_WAIT_NS):
        return None
    return due if now_ns < due else born_ns + STOP_WAIT_NS


_ENDED_ON_ITS_OWN = frozenset({TaskState.COMPLETE, TaskState.FAILED, TaskState.REJECTED, TaskState.ORPHANED})


def _replaced_on_purpose(task: Task, state: ClusterState) -> bool:
    """Neither ended on its own nor lost with its node: the orchestrator chose to replace it."""
    node = state.nodes.get(task.node_id)
    lost = bool(task.node_id) and (node is None or node.status.state == DOWN)
    return task.status.state not in _ENDED_ON_ITS_OWN and not lost


def _may_still_run(task: Task, state: ClusterState) -> bool:
    node = state.nodes.get(task.node_id)
    return (RANK[TaskState.ASSIGNED] <= RANK[task.status.state] <= RANK[TaskState.RUNNING]
            and node is not None and node.status.state != DOWN)


def stranded(task: Task, state: ClusterState) -> bool:
    """Already told to stop, not stopped, and its node is gone: nobody else will ever close it."""
    return (not tasks.is_live(task) and not tasks.has_stopped(task) and not tasks.never_ran(task)
            and task.node_id not in state.nodes)


def prune(slot: Slot, created: int, history_default: int, out: Decision) -> None:
    """Keep the newest `limit` tasks of the slot (the live one included), deleting the oldest that are
    finished or will never run."""
    limit = history_limit(history_default, slot.service.spec.task_template)
    if limit < 0:
        return
    excess = len(slot.members) + created - limit
    for t in tasks.oldest_first(slot.members):
        if excess <= 0:
            return
        if _prunable(t, slot):
            out.intents.append(tasks.delete(t))
            excess -= 1


def _prunable(task: Task, slot: Slot) -> bool:
    """Finished, or never placed and no longer wanted (a job's unplaced task still is)."""
    if tasks.is_live(task):
        return False
    return tasks.has_stopped(task) or (tasks.never_ran(task) and RANK[task.desired_state] > RANK[slot.start])
