"""How a task that publishes ports is reached on its node.

Each published port of the task's service gets a node-local endpoint: in host mode the port the
service publishes (the scheduler kept two such tasks off one node), in ingress mode a free port of the
node's address, which only the routing mesh needs to know. The agent reports them as the task's
`Status.PortStatus` (PublishedPort = the node-local port) when the task starts preparing, and the
executors hand them to the task as environment: `SHOAL_PORT_<target>` for each port, `PORT` for
the first, `SHOAL_NODE_ADDR` for the address to listen on (tasks run in the host's network).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from msgspec.structs import replace

from schemas.service import PortConfig
from schemas.task import Task
from services.kernel.ports import HOST, UDP, endpoint_ports

DRAIN_S = 1.0
"""How long a task leaving the mesh keeps running before it is stopped (at most its grace period):
time for every node's ingress to take it out of rotation and for requests in flight to finish."""

FreePort = Callable[[str], int]
"""A free port number for a protocol (`tcp`, `udp`) on the node's address."""


def node_ports(task: Task, free_port: FreePort) -> list[PortConfig] | None:
    """The task's node-local ports; None when its service publishes nothing."""
    ports = endpoint_ports(task.endpoint)
    if not ports:
        return None
    return [replace(p, published_port=p.published_port if p.publish_mode == HOST and p.published_port
                    else free_port(p.protocol or "tcp")) for p in ports]


def free_port_on(addr: str) -> FreePort:
    """Asks the kernel for a free port on `addr` (on any address when `addr` is not this machine's, as a
    simulated node's may be). Another process may take the port before the task binds it; the task then
    fails to listen, exits and is replaced with a fresh port."""
    def free(protocol: str) -> int:
        kind = socket.SOCK_DGRAM if protocol == UDP else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((addr, 0))
            except OSError:
                s.bind(("", 0))
            port: int = s.getsockname()[1]
            return port
    return free


def port_env(task: Task, addr: str) -> dict[str, str]:
    """The environment that tells a task where to listen."""
    ports = task.status.port_status.ports or []
    env = {f"SHOAL_PORT_{p.target_port}": str(p.published_port) for p in ports}
    if ports:
        env["PORT"] = str(ports[0].published_port)
        env["SHOAL_NODE_ADDR"] = addr
    return env
