"""Who can take a published port's traffic, as a pure function of the cluster state.

A task is a backend while it is observed running and still desired running on a ready node: the
moment the orchestrator desires it shut down it leaves rotation everywhere (its agent delays the stop,
see `services/agent/ports.DRAIN_S`), and a task on a node that stopped heartbeating is skipped until
the node is back. It is reached at its node's address on the node-local port its agent reported
in `Status.PortStatus` for the same target port and protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.node import Node
from schemas.service import PortConfig, Service
from schemas.task import Task, TaskState
from services.kernel.ports import TCP, UDP, ingress_ports, normal
from services.kernel.state import ClusterState

FORWARDED = (TCP, UDP)
"""SCTP ports are accepted by the API but not forwarded by the mesh."""


@dataclass(frozen=True, slots=True, order=True)
class Backend:
    node_id: str
    task_id: str
    addr: str
    port: int


@dataclass(frozen=True, slots=True)
class Route:
    protocol: str
    port: int
    service_id: str
    service_name: str
    backends: tuple[Backend, ...]


Key = tuple[str, int]
"""(protocol, published port)."""
Table = dict[Key, Route]


def build(state: ClusterState) -> Table:
    table: Table = {}
    for svc in state.services.values():
        for port in ingress_ports(svc):
            if port.protocol in FORWARDED and port.published_port:
                table[(port.protocol or TCP, port.published_port)] = _route(state, svc, port)
    return table


def _route(state: ClusterState, svc: Service, port: PortConfig) -> Route:
    backends = (_backend(state.nodes.get(t.node_id), t, port) for t in state.tasks_of_service(svc.id) if _serving(t))
    return Route(protocol=port.protocol or TCP, port=port.published_port or 0, service_id=svc.id,
                 service_name=svc.spec.name, backends=tuple(sorted(b for b in backends if b is not None)))


def _serving(task: Task) -> bool:
    return task.status.state is TaskState.RUNNING and task.desired_state is TaskState.RUNNING


def _backend(node: Node | None, task: Task, port: PortConfig) -> Backend | None:
    if node is None or node.status.state != "ready" or not node.status.addr:
        return None
    for local in task.status.port_status.ports or ():
        local = normal(local)
        if local.target_port == port.target_port and local.protocol == port.protocol and local.published_port:
            return Backend(node_id=node.id, task_id=task.id, addr=node.status.addr, port=local.published_port)
    return None
