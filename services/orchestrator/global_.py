"""Global services (swarm-behaviour 2.3): one task per node that is ready, active and matches.

A node event only concerns that node's slot, so node-triggered passes reconcile just the touched
nodes (and leave rolling updates alone: they need every slot in view); a change to the service
itself reconciles every node.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from schemas.service import Service
from schemas.task import Task, TaskState
from services.kernel import constraints
from services.kernel.reconcile import Decision
from services.kernel.state import ClusterState
from services.orchestrator import slots, tasks, update
from services.orchestrator.nodes import is_invalid, takes_new_tasks, wanted_constraints
from services.orchestrator.pacing import Pacing


def reconcile(state: ClusterState, service: Service, now_ns: int, history_default: int, pacing: Pacing,
              out: Decision, only_nodes: Iterable[str] | None = None) -> None:
    wanted = wanted_constraints(service.spec.task_template)
    if only_nodes is None:
        by_node: defaultdict[str, list[Task]] = defaultdict(list)
        for task in state.tasks_of_service(service.id):
            by_node[task.node_id].append(task)
        found = {n: by_node.get(n, []) for n in sorted(set(state.nodes) | set(by_node))}
    else:
        found = {n: [t for t in state.tasks_on_node(n) if t.service_id == service.id] for n in sorted(only_nodes)}
    occupied = [s for n, ts in found.items()
                if (s := _node_slot(state, service, wanted, n, ts, pacing, out)) is not None]
    planned = (update.plan(state, service, occupied, now_ns, out) if only_nodes is None
               else update.Planned([0] * len(occupied), set()))
    if planned.rolled_back:
        return
    for slot, n in zip(occupied, planned.created, strict=True):
        slots.reconcile(state, slot, now_ns, history_default, out, created=n, replaced=planned.replaced)


def _node_slot(state: ClusterState, service: Service, wanted: list[constraints.Constraint], node_id: str,
               found: list[Task], pacing: Pacing, out: Decision) -> slots.Slot | None:
    """The node's slot when it has members; otherwise start a task there if the node takes one."""
    node = state.nodes.get(node_id)
    if node is None:
        out.intents.extend(tasks.delete(t) for t in found)  # a deleted node's global tasks go with it
        return None
    members = [t for t in found if t.desired_state != TaskState.REMOVE]
    out.intents.extend(tasks.retire_all((t for t in found if t.desired_state == TaskState.REMOVE), state))
    fits = constraints.match_all(wanted, node)
    can_run = fits and takes_new_tasks(node)
    if members:
        return slots.Slot(service, 0, node_id, members, can_run=can_run, must_stop=is_invalid(node) or not fits)
    if can_run and pacing.grant(service.id, 1):
        out.intents.append(tasks.create(service, node_id=node_id))
    return None
