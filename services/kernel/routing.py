"""Where each event is written: its subject, from the event and the writer's view of the cluster.

Task events go under the task while it waits (`shoal.evt.task.<task>`), then under the node it is
bound to (`shoal.evt.assigned.<node>.<task>`), on the leaf of the component that writes them; that
is what lets an agent follow only its own node's tasks.
"""

from __future__ import annotations

from schemas.events import (
    AnyEvent,
    ClusterCreated,
    ClusterSpecUpdated,
    JoinTokenRotated,
    LeaderElected,
    LeaderWrote,
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
from services.kernel import subjects
from services.kernel.state import ClusterState


def subject_for(ev: AnyEvent, state: ClusterState) -> str:
    match ev:
        case ClusterCreated() | JoinTokenRotated() | ClusterSpecUpdated():
            return subjects.CLUSTER
        case NodeJoined() | NodeRejoined():
            return subjects.node(ev.node_id, "agent")
        case NodeUpdated() | NodeRemoved():
            return subjects.node(ev.node_id, "spec")
        case NodeStatusChanged():
            return subjects.node(ev.node_id, "status")
        case ServiceCreated() | ServiceUpdated() | ServiceRemoved():
            return subjects.service(ev.service_id, "spec")
        case UpdateStatusChanged():
            return subjects.service(ev.service_id, "update")
        case TaskCreated():
            return subjects.task(ev.task.node_id, ev.task.id, "desired")
        case TaskAssigned():
            return subjects.task(ev.node_id, ev.task.id, "placement")
        case TaskPending():
            return subjects.task(_node_of(state, ev.task_id), ev.task_id, "placement")
        case TaskDesiredStateChanged() | TaskRemoved():
            return subjects.task(_node_of(state, ev.task_id), ev.task_id, "desired")
        case TaskStatusChanged():
            return subjects.task(_node_of(state, ev.task_id), ev.task_id, "status")
        case LeaderElected():
            return subjects.leader_term(ev.loop)
        case LeaderWrote():
            return subjects.leader_fence(ev.loop)
    raise TypeError(f"no subject for {type(ev).__name__}")


def _node_of(state: ClusterState, task_id: str) -> str:
    task = state.tasks.get(task_id)
    return task.node_id if task is not None else ""
