"""What is already on a node: free resources (CPU, memory, generic), active tasks (per service and in
total), host ports.

Rebuilding this for every node on every pass would cost a scan of every task; instead the scheduler
keeps one per node and recomputes only the nodes the fold marked as touched (any task event on a
node touches it). Within a pass, placements update it in place so one pass never over-commits.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from schemas.node import Node
from schemas.task import RANK, Task, TaskState
from services.kernel.placement.ask import Ask, published_host_ports
from services.kernel.placement.generic import units
from services.kernel.state import ClusterState

_ASSIGNED = RANK[TaskState.ASSIGNED]
_RUNNING = RANK[TaskState.RUNNING]
_COMPLETE = RANK[TaskState.COMPLETE]


@dataclass(slots=True)
class NodeInfo:
    node: Node
    nano_cpus: int
    """Still free: the node's total minus what its assigned..running tasks reserve."""
    memory_bytes: int
    generic: Counter[str] = field(default_factory=Counter)
    """Free units of each generic resource kind, counted the same way."""
    active: int = 0
    """Tasks on the node not yet stopped whose desired state is at most `complete`."""
    active_by_service: Counter[str] = field(default_factory=Counter)
    host_ports: set[tuple[str, int]] = field(default_factory=set)

    def take(self, ask: Ask) -> None:
        self.nano_cpus -= ask.nano_cpus
        self.memory_bytes -= ask.memory_bytes
        for kind, n in ask.generic:
            self.generic[kind] -= n
        self.active += 1
        self.active_by_service[ask.service_id] += 1
        self.host_ports |= ask.host_ports


def tally(state: ClusterState, node: Node, leave_out: str = "") -> NodeInfo:
    """`leave_out`: a task id counted as if it were not on the node (to explain its own placement)."""
    resources = node.description.resources
    free = Counter(dict(units(resources.generic_resources)))
    info = NodeInfo(node, resources.nano_cpus, resources.memory_bytes, free)
    for task in state.tasks_on_node(node.id):
        if task.id != leave_out:
            _count(info, task, state)
    return info


def _count(info: NodeInfo, task: Task, state: ClusterState) -> None:
    rank = RANK[task.status.state]
    if rank > _RUNNING:
        return
    if RANK[task.desired_state] <= _COMPLETE:
        info.active += 1
        info.active_by_service[task.service_id] += 1
    if rank >= _ASSIGNED:
        reservations = task.spec.resources.reservations if task.spec.resources else None
        if reservations is not None:
            info.nano_cpus -= reservations.nano_cpus or 0
            info.memory_bytes -= reservations.memory_bytes or 0
            for kind, n in units(reservations.generic_resources):
                info.generic[kind] -= n
        info.host_ports |= published_host_ports(state.services.get(task.service_id))
