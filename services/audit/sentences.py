"""One sentence a person can read per event: "alice scaled web from 3 to 5", "node-2 was drained".

Pure: an event is described against the cluster as it was just before it (the caller folds the
event afterwards), which is what lets a sentence say "from 3".
"""

from __future__ import annotations

from schemas.events import (
    ClusterCreated,
    ClusterSpecUpdated,
    Envelope,
    Event,
    JoinTokenRotated,
    NodeJoined,
    NodeRejoined,
    NodeRemoved,
    NodeStatusChanged,
    NodeUpdated,
    ServiceCreated,
    ServiceRemoved,
    ServiceUpdated,
    TaskAssigned,
    TaskCreated,
    TaskDesiredStateChanged,
    TaskPending,
    TaskRemoved,
    TaskStatusChanged,
    UpdateStatusChanged,
)
from schemas.node import NodeSpec
from schemas.service import ServiceSpec
from schemas.task import Task
from services.kernel.state import ClusterState


def who(actor: str) -> str:
    """`api:alice` is alice; a component speaks as itself (`orchestrator`, `agent:<node>`)."""
    return actor.removeprefix("api:")


def describe(state: ClusterState, env: Envelope) -> str:
    return _describe(state, who(env.actor), env.event)


def _describe(state: ClusterState, actor: str, ev: Event) -> str:
    match ev:
        case ServiceCreated():
            return f"{actor} created service {ev.spec.name}{_mode(ev.spec)}"
        case ServiceUpdated():
            return _service_updated(state, actor, ev)
        case ServiceRemoved():
            return f"{actor} removed service {_service(state, ev.service_id)}"
        case UpdateStatusChanged():
            status = ev.update_status.state if ev.update_status is not None else "cleared"
            return f"update of {_service(state, ev.service_id)} is {status}"
        case NodeJoined() | NodeRejoined():
            verb = "joined" if isinstance(ev, NodeJoined) else "rejoined"
            return f"node {ev.description.hostname or ev.node_id} {verb} the cluster"
        case NodeUpdated():
            return _node_updated(state, actor, ev)
        case NodeStatusChanged():
            return f"node {_node(state, ev.node_id)} is {ev.state}"
        case NodeRemoved():
            return f"{actor} removed node {_node(state, ev.node_id)}"
        case ClusterCreated():
            return f"cluster {ev.cluster_id} was created"
        case JoinTokenRotated():
            return f"{actor} rotated the {ev.role} join token"
        case ClusterSpecUpdated():
            return f"{actor} updated the cluster settings"
    return _describe_task(state, ev)


def _describe_task(state: ClusterState, ev: Event) -> str:
    match ev:
        case TaskCreated():
            return f"task {_task_name(ev.task)} was created"
        case TaskAssigned():
            return f"task {_task_name(ev.task)} was assigned to {_node(state, ev.node_id)}"
        case TaskPending():
            return f"task {_task(state, ev.task_id)} is pending: {ev.err}"
        case TaskDesiredStateChanged():
            return f"task {_task(state, ev.task_id)} should be {ev.desired_state.value}"
        case TaskStatusChanged():
            where = _where(state, ev.task_id)
            detail = f": {ev.status.err}" if ev.status.err else ""
            return f"task {_task(state, ev.task_id)}{where} is {ev.status.state.value}{detail}"
        case TaskRemoved():
            return f"task {_task(state, ev.task_id)} was removed"
    return f"{type(ev).__name__}"


def _service_updated(state: ClusterState, actor: str, ev: ServiceUpdated) -> str:
    name = ev.spec.name
    if ev.rollback:
        return f"{actor} rolled back {name}"
    before = state.services.get(ev.service_id)
    old, new = _replicas(before.spec) if before is not None else None, _replicas(ev.spec)
    if before is not None and old != new and _same_but_replicas(before.spec, ev.spec):
        return f"{actor} scaled {name} from {old} to {new}"
    return f"{actor} updated service {name}"


def _node_updated(state: ClusterState, actor: str, ev: NodeUpdated) -> str:
    node = state.nodes.get(ev.node_id)
    name = _node(state, ev.node_id)
    before = node.spec if node is not None else NodeSpec()
    changes = []
    if ev.spec.availability != before.availability:
        changes.append({"drain": "drained", "pause": "paused", "active": "activated"}.get(
            ev.spec.availability, f"set {ev.spec.availability}"))
    if ev.spec.role != before.role:
        changes.append("promoted to manager" if ev.spec.role == "manager" else "demoted to worker")
    if (ev.spec.labels or {}) != (before.labels or {}):
        changes.append("relabelled")
    if not changes:
        return f"{actor} updated node {name}"
    return f"{name} was {' and '.join(changes)} by {actor}"


def _replicas(spec: ServiceSpec) -> int | None:
    mode = spec.mode
    return mode.replicated.replicas if mode is not None and mode.replicated is not None else None


def _same_but_replicas(a: ServiceSpec, b: ServiceSpec) -> bool:
    return a.task_template == b.task_template and a.labels == b.labels and a.endpoint_spec == b.endpoint_spec


def _mode(spec: ServiceSpec) -> str:
    replicas = _replicas(spec)
    if replicas is not None:
        return f" with {replicas} replica{'s' if replicas != 1 else ''}"
    return " (global)" if spec.mode is not None and spec.mode.global_ is not None else ""


def _service(state: ClusterState, service_id: str) -> str:
    service = state.services.get(service_id)
    return service.spec.name if service is not None else service_id


def _node(state: ClusterState, node_id: str) -> str:
    node = state.nodes.get(node_id)
    return (node.description.hostname or node_id) if node is not None else node_id


def _task(state: ClusterState, task_id: str) -> str:
    task = state.tasks.get(task_id)
    return _task_name(task) if task is not None else task_id


def _task_name(task: Task) -> str:
    """`web.2` for a replicated task, `web.<node>` for a global one, as `docker service ps` names them."""
    return f"{task.service_name or task.service_id}.{task.slot or task.node_id}"


def _where(state: ClusterState, task_id: str) -> str:
    task = state.tasks.get(task_id)
    return f" on {_node(state, task.node_id)}" if task is not None and task.node_id else ""
