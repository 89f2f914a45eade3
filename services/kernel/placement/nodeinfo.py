"""What is already on a node: free resources (CPU, memory, generic), active tasks (per service and in
total), host ports.

Rebuilding this for every node on every pass would cost a scan of every task. Instead each `NodeInfo`
remembers what each task on the node holds (`Usage`) and at which version of the task it counted it.
`recount` re-counts the tasks the fold says changed (`ClusterState.touched_tasks`), each on the node
it was on, so a pass costs a lookup per changed task. (`refresh`, the fallback when changes were not
kept, costs a lookup per task of every touched node: with status reports touching most nodes between
passes, that was a quarter of the scheduler's CPU at 100,000 tasks.) Within a pass, placements are
recorded with `take`, so one pass never over-commits; the `TaskAssigned` that follows replaces that
record with the task's own usage, and a refused one is touched again, on the node it tried, by the
reconciler, which releases it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import msgspec

from schemas.node import Node, NodeResources
from schemas.task import RANK, Task, TaskState
from services.kernel.placement.ask import Ask, published_host_ports
from services.kernel.placement.generic import Units, units
from services.kernel.state import ClusterState

_ASSIGNED = RANK[TaskState.ASSIGNED]
_RUNNING = RANK[TaskState.RUNNING]
_COMPLETE = RANK[TaskState.COMPLETE]
_TAKEN = -1
"""Version recorded for a placement made in this pass, before its event is in the log."""


class Usage(msgspec.Struct, frozen=True, gc=False):
    """What one task holds on its node: a place among the active tasks, and reservations once assigned.

    Kept per task, so at 100,000 tasks it was the scheduler's most numerous object the cyclic GC
    scans (with the tuple holding it); it holds only strings, numbers and tuples, so it can never
    be part of a cycle, and `gc=False` keeps it out of those scans.
    """

    service_id: str
    active: bool
    nano_cpus: int = 0
    memory_bytes: int = 0
    generic: Units = ()
    host_ports: frozenset[tuple[str, int]] = frozenset()


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
    host_ports: Counter[tuple[str, int]] = field(default_factory=Counter)
    """(protocol, port) published in host mode by the node's tasks, with how many hold each."""
    capacity: NodeResources = field(default_factory=NodeResources)
    held: dict[str, tuple[int, Usage | None]] = field(default_factory=dict)
    """Per task id: the task version counted, and what it holds (None: nothing)."""

    def take(self, ask: Ask, task_id: str) -> None:
        """A placement of this pass: counted now, replaced by the task's own usage once it is assigned."""
        self._hold(task_id, _TAKEN, Usage(ask.service_id, True, ask.nano_cpus, ask.memory_bytes, ask.generic,
                                          ask.host_ports))

    def _hold(self, task_id: str, version: int, usage: Usage | None) -> None:
        self._release(task_id)
        self.held[task_id] = (version, usage)
        if usage is not None:
            self._add(usage, 1)

    def _release(self, task_id: str) -> None:
        seen = self.held.pop(task_id, None)
        if seen is not None and seen[1] is not None:
            self._add(seen[1], -1)

    def _add(self, u: Usage, sign: int) -> None:
        if u.active:
            self.active += sign
            self.active_by_service[u.service_id] += sign
        self.nano_cpus -= sign * u.nano_cpus
        self.memory_bytes -= sign * u.memory_bytes
        for kind, n in u.generic:
            self.generic[kind] -= sign * n
        for port in u.host_ports:
            self.host_ports[port] += sign
            if self.host_ports[port] <= 0:
                del self.host_ports[port]


def tally(state: ClusterState, node: Node, leave_out: str = "") -> NodeInfo:
    """`leave_out`: a task id counted as if it were not on the node (to explain its own placement)."""
    resources = node.description.resources
    free = Counter(dict(units(resources.generic_resources)))
    info = NodeInfo(node, resources.nano_cpus, resources.memory_bytes, free, capacity=resources)
    for task in state.tasks_on_node(node.id):
        if task.id != leave_out:
            info._hold(task.id, task.version.index, usage(task, state))
    return info


def refresh(info: NodeInfo | None, state: ClusterState, node: Node, *, tasks_too: bool = True) -> NodeInfo:
    """`info` brought up to date with the node and (`tasks_too`) its tasks, re-counting only those
    that changed; a fresh tally when there is none yet or the node now advertises different resources."""
    if info is None or node.description.resources != info.capacity:
        return tally(state, node)
    info.node = node
    if not tasks_too:
        return info
    ids = state.tasks_by_node.get(node.id, ())
    tasks, held = state.tasks, info.held
    for task_id in ids:
        task = tasks[task_id]
        seen = held.get(task_id)
        if seen is None or seen[0] != task.version.index:
            info._hold(task_id, task.version.index, usage(task, state))
    if len(held) > len(ids):  # every task on the node is held now: the rest left it
        for gone in [t for t in held if t not in ids]:
            info._release(gone)
    return info


def recount(infos: dict[str, NodeInfo], state: ClusterState, changed: dict[str, str]) -> None:
    """The tallies brought up to date with the tasks in `changed`, each with the node it was on when
    it changed: counted again if its version moved, released if it is no longer there."""
    tasks = state.tasks
    for task_id, node_id in changed.items():
        info = infos.get(node_id)
        if info is None:
            continue  # unassigned, or a node without a tally yet (its tally will count it)
        task = tasks.get(task_id)
        if task is None or task.node_id != node_id:
            info._release(task_id)
            continue
        seen = info.held.get(task_id)
        if seen is None or seen[0] != task.version.index:
            info._hold(task_id, task.version.index, usage(task, state))


def usage(task: Task, state: ClusterState) -> Usage | None:
    rank = RANK[task.status.state]
    if rank > _RUNNING:
        return None
    active = RANK[task.desired_state] <= _COMPLETE
    if rank < _ASSIGNED:
        return Usage(task.service_id, True) if active else None
    reservations = task.spec.resources.reservations if task.spec.resources else None
    ports = published_host_ports(state.services.get(task.service_id))
    if reservations is None:
        return Usage(task.service_id, active, host_ports=ports)
    return Usage(task.service_id, active, reservations.nano_cpus or 0, reservations.memory_bytes or 0,
                 units(reservations.generic_resources), ports)
