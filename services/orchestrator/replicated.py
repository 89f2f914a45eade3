"""Replicated services (swarm-behaviour 2.2): exactly N occupied slots, numbered from 1."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from schemas.service import Service
from schemas.task import Task, TaskState
from services.kernel.reconcile import Decision
from services.kernel.state import ClusterState
from services.orchestrator import slots, tasks, update
from services.orchestrator.pacing import Pacing


def replicas(service: Service) -> int:
    """A create without a replica count means 1 (the Docker CLI sends `Replicated: {}`)."""
    mode = service.spec.mode
    wanted = mode.replicated.replicas if mode is not None and mode.replicated is not None else None
    return 1 if wanted is None else wanted


def reconcile(state: ClusterState, service: Service, now_ns: int, history_default: int, pacing: Pacing,
              out: Decision) -> None:
    by_slot: defaultdict[int, list[Task]] = defaultdict(list)
    leaving: list[Task] = []
    for task in state.tasks_of_service(service.id):
        (leaving if task.desired_state == TaskState.REMOVE else by_slot[task.slot]).append(task)
    keep = keep_order(by_slot)
    wanted = replicas(service)
    for number in keep[wanted:]:
        leaving.extend(by_slot[number])
    out.intents.extend(tasks.retire_all(leaving, state))
    kept = [slots.Slot(service, number, "", by_slot[number]) for number in keep[:wanted]]
    planned = update.plan(state, service, kept, now_ns, out)
    if planned.rolled_back:
        return
    for slot, n in zip(kept, planned.created, strict=True):
        slots.reconcile(state, slot, now_ns, history_default, out, created=n, replaced=planned.replaced)
    for number in _free_numbers(set(by_slot), pacing.grant(service.id, wanted - len(keep))):
        out.intents.append(tasks.create(service, slot=number))


def keep_order(by_slot: dict[int, list[Task]]) -> list[int]:
    """Occupied slots, the ones to keep first when scaling down: slots with a running task before
    the others, lower numbers first; then each slot ranked as the k-th copy of the service on its
    node, so the nodes holding the most copies lose theirs first."""
    serving = {n: _serving(members) for n, members in by_slot.items()}
    by_running = sorted(serving, key=lambda n: (not any(t.status.state == TaskState.RUNNING for t in serving[n]), n))
    copies: Counter[str] = Counter()
    rank: dict[int, float] = {}
    for n in by_running:
        if len(serving[n]) == 1:
            node = serving[n][0].node_id
            rank[n] = copies[node]
            copies[node] += 1
        else:
            rank[n] = math.inf
    return sorted(by_running, key=rank.__getitem__)


def _serving(members: list[Task]) -> list[Task]:
    """The tasks that stand for a slot: its live ones, or its latest when none is live."""
    return [t for t in members if tasks.is_live(t)] or [tasks.latest(members)]


def _free_numbers(taken: set[int], count: int) -> list[int]:
    free: list[int] = []
    number = 1
    while len(free) < count:
        if number not in taken:
            free.append(number)
        number += 1
    return free

