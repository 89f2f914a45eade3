"""Global services (swarm-behaviour 2.3): one task per node that is ready, active and matches.

A node event only concerns that node's slot, so node-triggered passes reconcile just the touched
nodes; a change to the service itself reconciles every node.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from schemas.service import Service
from schemas.task import Task, TaskState
from services.kernel import constraints
from services.kernel.reconcile import Decision
from services.kernel.state import ClusterState
from services.orchestrator import slots, tasks
from services.orchestrator.nodes import is_invalid, takes_new_tasks


def reconcile(state: ClusterState, service: Service, now_ns: int, history_default: int, out: Decision,
              only_nodes: Iterable[str] | None = None) -> None:
    wanted = _constraints(service)
    if only_nodes is None:
        by_node: defaultdict[str, list[Task]] = defaultdict(list)
        for task in state.tasks_of_service(service.id):
            by_node[task.node_id].append(task)
        for node_id in sorted(set(state.nodes) | set(by_node)):
            _node_slot(state, service, wanted, node_id, by_node.get(node_id, []), now_ns, history_default, out)
    else:
        for node_id in sorted(only_nodes):
            found = [t for t in state.tasks_on_node(node_id) if t.service_id == service.id]
            _node_slot(state, service, wanted, node_id, found, now_ns, history_default, out)


def _constraints(service: Service) -> list[constraints.Constraint]:
    """Unparseable constraints are ignored, as swarmkit's global orchestrator does (the API rejects them)."""
    placement = service.spec.task_template.placement if service.spec.task_template else None
    try:
        return constraints.parse_all(placement.constraints if placement else None)
    except constraints.ConstraintError:
        return []


def _node_slot(state: ClusterState, service: Service, wanted: list[constraints.Constraint], node_id: str,
               found: list[Task], now_ns: int, history_default: int, out: Decision) -> None:
    node = state.nodes.get(node_id)
    if node is None:
        out.intents.extend(tasks.delete(t) for t in found)  # a deleted node's global tasks go with it
        return
    members = [t for t in found if t.desired_state != TaskState.REMOVE]
    out.intents.extend(tasks.retire_all((t for t in found if t.desired_state == TaskState.REMOVE), state))
    fits = constraints.match_all(wanted, node)
    can_run = fits and takes_new_tasks(node)
    if members:
        slot = slots.Slot(service, 0, node_id, members, can_run=can_run, must_stop=is_invalid(node) or not fits)
        slots.reconcile(state, slot, now_ns, history_default, out)
    elif can_run:
        out.intents.append(tasks.create(service, node_id=node_id))
