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
from collections.abc import Callable, Collection

from msgspec.structs import replace

from schemas.service import PortConfig
from schemas.task import Task
from services.kernel.ports import HOST, UDP, endpoint_ports

DRAIN_S = 1.0
"""How long a task leaving the mesh keeps running before it is stopped (at most its grace period):
time for every node's ingress to take it out of rotation and for requests in flight to finish."""

FreePort = Callable[[str], int]
"""A free port number for a protocol (`tcp`, `udp`) on the node's address."""

PICKS = 16
"""How many times ports are picked again while one collides with a live task's; past that the last pick
stands (the task then fails to listen, exits and is replaced)."""


def node_ports(task: Task, free_port: FreePort) -> list[PortConfig] | None:
    """The task's node-local ports; None when its service publishes nothing."""
    ports = endpoint_ports(task.endpoint)
    if not ports:
        return None
    return [replace(p, published_port=p.published_port if p.publish_mode == HOST and p.published_port
                    else free_port(p.protocol or "tcp")) for p in ports]


def pick_avoiding(pick: Callable[[], list[PortConfig] | None],
                  taken: Collection[tuple[str | None, int | None]]) -> list[PortConfig] | None:
    """`pick`'s ports, picked again while a port it chose for ingress is one of `taken` ((protocol, port)
    of this agent's live tasks): the kernel's probe only sees bound ports, and a task given a port may
    not listen on it yet. Host-mode ports are the service's own number; picking again cannot move them."""
    ports = pick()
    for _ in range(PICKS):
        if not any(p.publish_mode != HOST and (p.protocol, p.published_port) in taken for p in ports or ()):
            break
        ports = pick()
    return ports


def free_port_on(addr: str) -> FreePort:
    """Asks the kernel for a port free now on `addr` (on any address when `addr` is not this machine's, as
    a simulated node's may be). The probe socket closes at once, so the kernel may offer the port again
    before the task binds it: the worker picks again when a live task already holds it (`pick_avoiding`).
    Another process may still take it first; the task then fails to listen, exits and is replaced with a
    fresh port."""
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
