"""How services, tasks and nodes are shown to clients: the stored records plus what Docker derives.

Docker clients dereference some fields without nil checks (a task's `Spec.ContainerSpec` crashes
`docker service ps` when absent) and read others that swarmkit computes rather than stores
(`ServiceStatus`, `ManagerStatus`); this module supplies both, never mutating the projection.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
from msgspec.structs import replace

from schemas.node import ManagerStatus, Node
from schemas.service import ContainerSpec, Endpoint, Service, ServiceStatus
from schemas.task import Task, TaskState
from services.api import modes
from services.api.defaults import insert_defaults
from services.kernel.ports import endpoint_ports
from services.kernel.redact import public_service, public_task
from services.kernel.state import ClusterState

MANAGER_PORT = 2377


def service_view(svc: Service, *, status: ServiceStatus | None = None, defaults: bool = False) -> Service:
    """Without registry credentials (kernel/redact.py), as the Engine API never shows them back."""
    public = public_service(svc)
    spec = insert_defaults(public.spec) if defaults else public.spec
    return replace(public, spec=spec, service_status=status, endpoint=_endpoint(svc))


def _endpoint(svc: Service) -> Endpoint:
    """The CLI's PORTS column reads `Endpoint.Ports`: the ports with their assigned numbers."""
    endpoint = svc.endpoint or Endpoint(spec=svc.spec.endpoint_spec)
    return replace(endpoint, ports=endpoint_ports(endpoint) or None)


def service_status(state: ClusterState, svc: Service) -> ServiceStatus:
    """Counts for the CLI's REPLICAS column, by dockerd's rules: running is any task observed
    running; desired depends on the mode; completed counts finished job tasks of the current run
    (a job's tasks of earlier iterations are history)."""
    tasks = state.tasks_of_service(svc.id)
    running = sum(1 for t in tasks if t.status.state is TaskState.RUNNING)
    if svc.job_status is not None:
        tasks = [t for t in tasks if _iteration(t) == svc.job_status.job_iteration.index]
    counts: Counter[tuple[TaskState, TaskState]] = Counter((t.status.state, t.desired_state) for t in tasks)
    completed = sum(n for (observed, _), n in counts.items() if observed is TaskState.COMPLETE)
    return ServiceStatus(
        running_tasks=running,
        desired_tasks=_desired(svc, counts, completed),
        completed_tasks=completed if modes.mode_name(svc.spec) in (modes.REPLICATED_JOB, modes.GLOBAL_JOB) else 0,
    )


def _iteration(task: Task) -> int:
    return task.job_iteration.index if task.job_iteration is not None else 0


def _desired(svc: Service, counts: Counter[tuple[TaskState, TaskState]], completed: int) -> int:
    mode = svc.spec.mode
    kind = modes.mode_name(svc.spec)
    if kind == modes.GLOBAL:
        return sum(n for (_, desired), n in counts.items() if desired is TaskState.RUNNING)
    if kind == modes.GLOBAL_JOB:
        return sum(n for (observed, desired), n in counts.items()
                   if desired is TaskState.COMPLETE and observed is not TaskState.COMPLETE)
    if kind == modes.REPLICATED_JOB and mode is not None and mode.replicated_job is not None:
        job = mode.replicated_job
        remaining = (job.total_completions or 0) - completed
        return max(0, min(job.max_concurrent or 0, remaining))
    replicated = mode.replicated if mode is not None else None
    return (replicated.replicas or 0) if replicated is not None else 0


def task_view(task: Task) -> Task:
    if task.spec.container_spec is None:
        return replace(task, spec=replace(task.spec, container_spec=ContainerSpec()))
    return public_task(task)


def node_view(node: Node, self_id: str) -> dict[str, Any]:
    """A node as Docker shows it: managers carry a `ManagerStatus`."""
    out: dict[str, Any] = msgspec.to_builtins(node)
    if node.spec.role == "manager":
        out["ManagerStatus"] = msgspec.to_builtins(node.manager_status or _manager_status(node, self_id))
    return out


def _manager_status(node: Node, self_id: str) -> ManagerStatus:
    """Shoal's managers share one log instead of a raft group; the node this gateway speaks for
    is shown as the leader, so `docker node ls` reads as it does on a Swarm manager."""
    return ManagerStatus(
        leader=node.id == self_id,
        reachability="reachable" if node.status.state == "ready" else "unreachable",
        addr=manager_addr(node),
    )


def manager_addr(node: Node) -> str:
    """Where Swarm would reach a manager (`docker swarm join-token` prints it); empty if unknown."""
    return f"{node.status.addr}:{MANAGER_PORT}" if node.status.addr else ""


def self_node_id(state: ClusterState, configured: str) -> str:
    """The node this gateway speaks for (`*` in `docker node ls`, `self` in the CLI): the one
    configured, else the oldest ready manager, else the oldest node, else none."""
    if configured:
        return configured
    nodes = sorted(state.nodes.values(), key=lambda n: (n.created_at, n.id))
    managers = [n for n in nodes if n.spec.role == "manager" and n.status.state == "ready"]
    chosen = managers or nodes
    return chosen[0].id if chosen else ""
