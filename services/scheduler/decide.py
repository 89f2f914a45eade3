"""The scheduler's decision: bind waiting tasks to nodes, or record why they must wait.

`place` is pure over the projection plus the per-node tallies it is handed (which it updates as it
places, so one pass never over-commits a node) and the recent failures. `Scheduler` is the `Decide`
the loop calls: it keeps those tallies current for the nodes that changed, remembers failures past
the pruning of task history, and remembers which services still have tasks waiting. Those are
retried on every pass: a node joining or resources freeing may place them, and placements made in
this very pass may change why they wait, so the reason written is never stale.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from schemas.events import TaskAssigned, TaskPending
from schemas.service import Service
from schemas.task import RANK, Task, TaskState
from services.kernel import subjects
from services.kernel.placement import filters
from services.kernel.placement.ask import Ask
from services.kernel.placement.nodeinfo import NodeInfo, recount, refresh
from services.kernel.placement.ranking import RecentFailures
from services.kernel.reconcile import Decision
from services.kernel.state import ClusterState
from services.kernel.writer import Intent
from services.scheduler.spread import Tree

PASS_BUDGET = 1000
"""Placements per pass at most. A pass is appended as one pipelined burst and the next pass waits
until the scheduler sees its own writes: 100,000 tasks in one pass would hold the event loop for
seconds, overflow the append window and delay every task to the end of the burst. Services past the
budget are deferred (first in line next pass), not reported pending."""

NO_SUITABLE_NODE = "no suitable node"
NO_NODES = "no_nodes"
"""Reason label when no node was there to reject anything."""


@dataclass(frozen=True, slots=True)
class _Unplaced:
    tasks: list[Task]
    ask: Ask
    pipeline: list[filters.Filter]
    nodes: Sequence[NodeInfo]
    preassigned: bool


@dataclass(slots=True)
class Placement:
    decision: Decision = field(default_factory=Decision)
    waiting: dict[str, Counter[str]] = field(default_factory=dict)
    """Per service, the tasks left waiting by reason (the filter that rejected the most nodes)."""
    unplaced: list[_Unplaced] = field(default_factory=list)
    placed: int = 0
    deferred: list[str] = field(default_factory=list)
    """Services left for the next pass because the pass's budget ran out: neither placed nor pending."""

    def assign(self, task: Task, info: NodeInfo, ask: Ask) -> None:
        self.placed += 1
        node_id = info.node.id
        event = TaskAssigned(task=msgspec.structs.replace(task, node_id=node_id), node_id=node_id)
        self.decision.intents.append(Intent(event, expect_seq=task.version.index,
                                            expect_subject=subjects.task_all(task.node_id, task.id)))
        info.take(ask, task.id)

    def explain_unplaced(self) -> None:
        """Why each leftover waits, judged once every placement of the pass is counted, so the next
        pass (seeing those placements in the log) finds the same reason and writes nothing."""
        for u in self.unplaced:
            rejections = Counter(f for i in u.nodes if (f := filters.rejection(u.pipeline, u.ask, i)) is not None)
            explanation = filters.explain(rejections)
            if u.preassigned:
                err = explanation
            else:
                err = f"{NO_SUITABLE_NODE} ({explanation})" if explanation else NO_SUITABLE_NODE
            reason = rejections.most_common(1)[0][0].name if rejections else NO_NODES
            for task in u.tasks:
                self._wait(task, err, reason)

    def _wait(self, task: Task, err: str, reason: str) -> None:
        """Keep the task pending; write the reason only when it changed (retries are not news)."""
        self.waiting.setdefault(task.service_id, Counter())[reason] += 1
        if task.status.state != TaskState.PENDING or task.status.err != err:
            self.decision.intents.append(Intent(TaskPending(task_id=task.id, err=err), expect_seq=task.version.index,
                                                expect_subject=subjects.task_all(task.node_id, task.id)))


def is_waiting(task: Task) -> bool:
    """Not yet placed, and still wanted: desired above `complete` (shut down, removed) is never placed;
    a job's tasks want `complete`."""
    unplaced = task.status.state in (TaskState.NEW, TaskState.PENDING)
    return unplaced and RANK[task.desired_state] <= RANK[TaskState.COMPLETE]


def place(state: ClusterState, service_ids: Sequence[str], infos: dict[str, NodeInfo],
          failures: RecentFailures, budget: int | None = None) -> Placement:
    """Services in the given order; after `budget` placements the rest are deferred, untouched."""
    out = Placement()
    for n, service_id in enumerate(service_ids):
        service = state.services.get(service_id)
        if service is None:
            continue  # removed: its tasks are the orchestrator's to delete, never placed
        if not _place_service(service, state, infos, failures, out, budget):
            out.deferred = list(service_ids[n:])
            break
    out.explain_unplaced()
    return out


def _place_service(service: Service, state: ClusterState, infos: dict[str, NodeInfo], failures: RecentFailures,
                   out: Placement, budget: int | None) -> bool:
    """False when the budget ran out before every waiting task of the service was considered."""
    waiting = sorted((t for t in state.tasks_of_service(service.id) if is_waiting(t)),
                     key=lambda t: (t.slot, t.created_at, t.id))
    if budget is not None and waiting and out.placed >= budget:
        return False
    groups: dict[int, list[Task]] = {}
    for task in waiting:
        if task.node_id:
            _confirm(service, task, infos, out)
        else:
            groups.setdefault(task.spec_version.index, []).append(task)
    for version, group in sorted(groups.items()):
        left = len(group) if budget is None else budget - out.placed
        if left <= 0:
            return False
        _place_group(service, group[:left], infos, failures.on_nodes(service.id, version), out)
        if left < len(group):
            return False
    return True


def _confirm(service: Service, task: Task, infos: dict[str, NodeInfo], out: Placement) -> None:
    """A global task comes with its node: only check that the node can take it."""
    info = infos.get(task.node_id)
    if info is None:
        return  # the node is gone: the orchestrator deletes its global tasks
    ask = Ask.of(task, service)
    pipeline = filters.enabled(ask)
    if filters.rejection(pipeline, ask, info) is None:
        out.assign(task, info, ask)
    else:
        out.unplaced.append(_Unplaced([task], ask, pipeline, [info], preassigned=True))


def _place_group(service: Service, group: list[Task], infos: dict[str, NodeInfo], failures: Counter[str],
                 out: Placement) -> None:
    """Tasks of one service and spec version ask the same of every node: filter the nodes once, then
    hand each task to the best place, re-ranking after each (which spreads them)."""
    ask = Ask.of(group[0], service)
    pipeline = filters.enabled(ask)
    tree = Tree(infos, ask, pipeline, failures)
    for placed, task in enumerate(group):
        info = tree.take()
        if info is None:
            out.unplaced.append(_Unplaced(group[placed:], ask, pipeline, list(infos.values()), preassigned=False))
            return
        out.assign(task, info, ask)
        tree.took(info)


class Scheduler:
    """The scheduler's `Decide`: `place` plus what it remembers between passes (see the module doc)."""

    def __init__(self, budget: int | None = PASS_BUDGET) -> None:
        self.infos: dict[str, NodeInfo] = {}
        self.waiting: dict[str, Counter[str]] = {}
        self.deferred: list[str] = []
        self.failures = RecentFailures()
        self.budget = budget

    def __call__(self, state: ClusterState, services: set[str], nodes: set[str], now_ns: int) -> Decision:
        changed, state.touched_tasks = state.touched_tasks, {}
        for node_id in nodes:
            node = state.nodes.get(node_id)
            if node is None:
                self.infos.pop(node_id, None)
            else:
                self.infos[node_id] = refresh(self.infos.get(node_id), state, node, tasks_too=changed is None)
        if changed:
            recount(self.infos, state, changed)
        self.failures.note(state, services, now_ns)
        first = self.deferred
        candidates = (services | set(self.waiting)) - set(first)
        result = place(state, [*first, *sorted(candidates)], self.infos, self.failures, self.budget)
        deferred = set(result.deferred)
        for service_id in (*first, *candidates):
            if service_id not in deferred:
                self.waiting.pop(service_id, None)
        self.waiting.update(result.waiting)
        self.deferred = result.deferred
        return result.decision

    def pending(self) -> Counter[str]:
        """Tasks waiting for a node, by reason."""
        total: Counter[str] = Counter()
        for reasons in self.waiting.values():
            total.update(reasons)
        return total
