"""Orphaned tasks (swarm-behaviour 1.3, 2.7): tasks on a node that has been `down` for 24 hours are
closed as `orphaned` by the managers, since no agent will tell what became of them.

As in swarmkit's dispatcher, only tasks that could have made progress while the node was away
(`assigned` up to `running`) change, and their Message is kept. The clock starts when the node went
down (`Node.StatusSince`, from the log), so a new leader neither restarts nor forgets it.
"""

from __future__ import annotations

from schemas.task import RANK, TaskState
from services.kernel.ids import parse_ns
from services.kernel.reconcile import Decision, Timer
from services.kernel.state import ClusterState
from services.orchestrator import tasks
from services.orchestrator.nodes import DOWN

ORPHAN_AFTER_S = 24 * 60 * 60
_ASSIGNED, _RUNNING = RANK[TaskState.ASSIGNED], RANK[TaskState.RUNNING]


def decide(state: ClusterState, nodes: set[str], now_ns: int, after_ns: int) -> Decision:
    """For the touched nodes that are down: orphan their tasks once `after_ns` has passed since they
    went down, or a timer for when it will have."""
    out = Decision()
    for node_id in sorted(nodes):
        node = state.nodes.get(node_id)
        if node is None or node.status.state != DOWN:
            continue
        due = _since_ns(node.status_since or node.updated_at) + after_ns
        if now_ns < due:
            out.timers.append(Timer(due, node_id=node_id))
            continue
        out.intents.extend(tasks.orphan(t, t.status.message) for t in state.tasks_on_node(node_id)
                           if _ASSIGNED <= RANK[t.status.state] <= _RUNNING)
    return out


def _since_ns(text: str) -> int:
    try:
        return parse_ns(text)
    except ValueError:
        return 0
