"""Why a task is where it is, or why it waits: every node with the filter that rejected it, or its rank.

Computed from the gateway's own projection with the scheduler's own code (`services.kernel.placement`),
so the answer is the scheduler's answer for the cluster as it is now. A placed task is explained as of
now with itself left out of its node's tally, i.e. "where would it go if it were placed again now";
replaying the log to the moment it was placed would cost a replay per request. Ranks follow the
scheduler's order: with placement preferences, the label branch holding the fewest of the service's
tasks first (ties by label value), then spread (recent failures, tasks of the service, tasks in total).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import msgspec

from schemas.node import Node
from schemas.task import Task
from services.kernel.placement import filters, preferences
from services.kernel.placement.ask import Ask
from services.kernel.placement.nodeinfo import NodeInfo, tally
from services.kernel.placement.ranking import RecentFailures, rank
from services.kernel.state import ClusterState


class Score(msgspec.Struct, kw_only=True):
    service_tasks: int = msgspec.field(name="ServiceTasks")
    total_tasks: int = msgspec.field(name="TotalTasks")
    recent_failures: int = msgspec.field(name="RecentFailures")


class NodeVerdict(msgspec.Struct, kw_only=True):
    node_id: str = msgspec.field(name="NodeID")
    hostname: str = msgspec.field(name="Hostname")
    eligible: bool = msgspec.field(name="Eligible")
    filter: str = msgspec.field(name="Filter")
    """Name of the filter that rejected the node (`resources`, `constraints`, ...), "" when eligible."""
    reason: str = msgspec.field(name="Reason")
    rank: int | None = msgspec.field(name="Rank")
    """1 = where the scheduler would put the next task of this service; None when not eligible."""
    score: Score = msgspec.field(name="Score")
    chosen: bool = msgspec.field(name="Chosen")
    """The node the task is on."""


class Explanation(msgspec.Struct, kw_only=True):
    task: str = msgspec.field(name="Task")
    service_id: str = msgspec.field(name="ServiceID")
    service_name: str = msgspec.field(name="ServiceName")
    slot: int | None = msgspec.field(name="Slot")
    node_id: str = msgspec.field(name="NodeID")
    state: str = msgspec.field(name="State")
    message: str = msgspec.field(name="Message")
    nodes: list[NodeVerdict] = msgspec.field(name="Nodes")


def explain(state: ClusterState, task: Task, now_ns: int) -> Explanation:
    ask = Ask.of(task, state.services.get(task.service_id))
    pipeline = filters.enabled(ask)
    failures = RecentFailures()
    failures.note(state, {task.service_id}, now_ns)
    failed = failures.on_nodes(task.service_id, task.spec_version.index)
    infos = [tally(state, node, leave_out=task.id) for node in sorted(state.nodes.values(), key=_by_name)]
    order = _order(infos, ask, pipeline, failed)
    verdicts = [_verdict(info, ask, pipeline, order, failed, task) for info in infos]
    verdicts.sort(key=lambda v: (v.rank is None, v.rank or 0, v.hostname, v.node_id))
    return Explanation(task=task.id, service_id=task.service_id, service_name=task.service_name,
                       slot=task.slot or None, node_id=task.node_id, state=str(task.status.state),
                       message=task.status.err or task.status.message, nodes=verdicts)


def _by_name(node: Node) -> tuple[str, str]:
    return (node.description.hostname, node.id)


def _order(infos: Sequence[NodeInfo], ask: Ask, pipeline: Sequence[filters.Filter],
           failed: Counter[str]) -> dict[str, int]:
    """Rank (1 = best) of each eligible node: the scheduler's spread tree, read as one sort key."""
    levels = preferences.levels(ask.preferences)
    paths = {i.node.id: tuple(label_of(i.node) for label_of in levels) for i in infos}
    below: Counter[tuple[str, ...]] = Counter()
    for info in infos:
        path = paths[info.node.id]
        for depth in range(1, len(path) + 1):
            below[path[:depth]] += info.active_by_service[ask.service_id]

    def key(info: NodeInfo) -> tuple[object, ...]:
        path = paths[info.node.id]
        branches = tuple((below[path[:d]], path[d - 1]) for d in range(1, len(path) + 1))
        return (*branches, rank(info, ask.service_id, failed))

    eligible = sorted((i for i in infos if filters.rejection(pipeline, ask, i) is None), key=key)
    return {info.node.id: n for n, info in enumerate(eligible, start=1)}


def _verdict(info: NodeInfo, ask: Ask, pipeline: Sequence[filters.Filter], order: dict[str, int],
             failed: Counter[str], task: Task) -> NodeVerdict:
    rejected = filters.rejection(pipeline, ask, info)
    score = Score(service_tasks=info.active_by_service[ask.service_id], total_tasks=info.active,
                  recent_failures=failed[info.node.id])
    return NodeVerdict(node_id=info.node.id, hostname=info.node.description.hostname, eligible=rejected is None,
                       filter=rejected.name if rejected else "", reason=rejected.why(ask, info) if rejected else "",
                       rank=order.get(info.node.id), score=score, chosen=bool(task.node_id) and
                       info.node.id == task.node_id)
