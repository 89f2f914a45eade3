"""Rebalance (Shoal's, not Swarm's: moby/moby#24103): keep an opted-in replicated service evenly
spread over the nodes that can run it, so a node that joins or comes back gets its share.

A service opts in with the label `shoal.rebalance=true` (or every replicated service does, with the
orchestrator's `--rebalance`). When the service is settled (every slot has one running task, no
update in progress) and the busiest eligible node holds at least two tasks more than the idlest, one
slot moves: a new task in the same slot, placed on the idlest node, starts first; once it runs, the
old one is told to stop. So the running count never drops. Moves follow the service's UpdateConfig:
at most `Parallelism` at a time (0: as many as needed), `Delay` after each. A move whose task fails
waits out the restart delay before the next try; one the scheduler cannot place stays pending with
its reason, and the old task keeps running.

The move's task carries the label `shoal.rebalance.from=<old task id>`, which is how a later pass (or
a new leader) knows what to stop and how `docker inspect` shows why the task exists.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from schemas.service import Service
from schemas.task import Task, TaskState
from services.kernel import constraints
from services.kernel.reconcile import Decision, Timer
from services.kernel.state import ClusterState
from services.orchestrator import slots, tasks
from services.orchestrator.nodes import takes_new_tasks, wanted_constraints
from services.orchestrator.replicated import replicas
from services.orchestrator.restart import RestartPolicy
from services.orchestrator.update import COMPLETED, ROLLBACK_COMPLETED, UpdatePolicy

LABEL = "shoal.rebalance"
FROM = "shoal.rebalance.from"
_ENDED = frozenset({TaskState.FAILED, TaskState.REJECTED, TaskState.COMPLETE, TaskState.ORPHANED})


def opted_in(service: Service, cluster_wide: bool) -> bool:
    labels = service.spec.labels or {}
    return labels.get(LABEL, "true" if cluster_wide else "false").lower() == "true"


def moved_from(task: Task) -> str:
    return task.labels.get(FROM, "") if task.labels else ""


def reconcile(state: ClusterState, service: Service, now_ns: int, out: Decision) -> None:
    by_slot: defaultdict[int, list[Task]] = defaultdict(list)
    for t in state.tasks_of_service(service.id):
        if tasks.is_live(t) and not slots.is_dead(t, state):  # the dead are the slot's to replace
            by_slot[t.slot].append(t)
    if not _settled(service, by_slot):
        return
    policy = UpdatePolicy.of(service.spec.update_config)
    busy = _finish_moves(by_slot, out)
    if _cooling(state, service, policy, now_ns, out):
        return
    free = len(by_slot) if policy.parallelism == 0 else policy.parallelism - busy
    for source, target in _plan(state, service, by_slot, free):
        out.intents.append(tasks.create(service, slot=source.slot, node_id=target, labels={FROM: source.id}))


def cancel(state: ClusterState, service: Service, out: Decision) -> None:
    """A service that no longer opts in: moves not yet running are called off (the old task stays)."""
    live = [t for t in state.tasks_of_service(service.id) if tasks.is_live(t)]
    ids = {t.id for t in live}
    out.intents.extend(tasks.set_desired(t, TaskState.SHUTDOWN) for t in live  # the dead are the slot's
                       if moved_from(t) in ids and t.status.state != TaskState.RUNNING and not slots.is_dead(t, state))


def _move(live: list[Task]) -> Task | None:
    """The new task of a move still under way in this slot: its old task is still wanted."""
    ids = {t.id for t in live}
    return next((t for t in live if moved_from(t) in ids), None)


def _settled(service: Service, by_slot: dict[int, list[Task]]) -> bool:
    """Nothing else is going on: all slots there, each with one running task (besides a move's new
    one), no update running or paused."""
    status = service.update_status
    if status is not None and status.state not in (COMPLETED, ROLLBACK_COMPLETED):
        return False
    if len(by_slot) != replicas(service):
        return False
    for live in by_slot.values():
        rest = [t for t in live if t is not _move(live)]
        if len(rest) != 1 or rest[0].status.state != TaskState.RUNNING:
            return False
    return True


def _finish_moves(by_slot: dict[int, list[Task]], out: Decision) -> int:
    """Stop the old task of every move whose new task runs; how many moves are still starting."""
    busy = 0
    for live in by_slot.values():
        new = _move(live)
        if new is None:
            continue
        if new.status.state == TaskState.RUNNING:
            out.intents.extend(tasks.set_desired(t, TaskState.SHUTDOWN) for t in live if t.id == moved_from(new))
        else:
            busy += 1
    return busy


def _cooling(state: ClusterState, service: Service, policy: UpdatePolicy, now_ns: int, out: Decision) -> bool:
    """`Delay` after the last move's task started, the restart delay after one that failed."""
    moves = [t for t in state.tasks_of_service(service.id) if moved_from(t)]
    due = max((tasks.status_ns(t) + (policy.delay_ns if t.status.state == TaskState.RUNNING
                                     else RestartPolicy.of(t.spec).delay_ns)
               for t in moves if t.status.state == TaskState.RUNNING or t.status.state in _ENDED), default=0)
    if due > now_ns:
        out.timers.append(Timer(due, service_id=service.id))
        return True
    return False


def _plan(state: ClusterState, service: Service, by_slot: dict[int, list[Task]], free: int) -> list[tuple[Task, str]]:
    """Up to `free` moves, each from the busiest eligible node to the idlest, while they differ by two."""
    eligible = _eligible(state, service)
    if len(eligible) < 2 or free <= 0:
        return []
    load: Counter[str] = Counter({n: 0 for n in eligible})
    movable: defaultdict[str, list[Task]] = defaultdict(list)
    for live in by_slot.values():
        new = _move(live)
        node = new.node_id if new is not None else live[0].node_id
        if node in load:
            load[node] += 1
            if new is None:
                movable[node].append(live[0])
    cap = (service.spec.task_template.placement.max_replicas if service.spec.task_template
           and service.spec.task_template.placement else None) or 0
    moves: list[tuple[Task, str]] = []
    while len(moves) < free:
        busiest = max(sorted(load), key=lambda n: (len(movable[n]) > 0, load[n]))
        idlest = min(sorted(load), key=load.__getitem__)
        if load[busiest] - load[idlest] < 2 or not movable[busiest] or (cap and load[idlest] >= cap):
            break
        source = max(movable[busiest], key=lambda t: t.slot)
        movable[busiest].remove(source)
        load[busiest] -= 1
        load[idlest] += 1
        moves.append((source, idlest))
    return moves


def _eligible(state: ClusterState, service: Service) -> list[str]:
    """Nodes a task of this service could be placed on now (ready, active, matching); a service with
    placement preferences is spread by the scheduler's own rule, which rebalancing does not second-guess."""
    placement = service.spec.task_template.placement if service.spec.task_template else None
    if placement is not None and placement.preferences:
        return []
    wanted = wanted_constraints(service.spec.task_template)
    return [n.id for n in state.nodes.values() if takes_new_tasks(n) and constraints.match_all(wanted, n)]
