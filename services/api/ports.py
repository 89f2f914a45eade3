"""Assigning published ports, as swarmkit's allocator and `checkPortConflicts` do.

An ingress port is the cluster's: every node listens on it, so two services can never share one, and
a host-mode port may not take a number some service already publishes through the mesh. Host-mode
ports of different services may share a number (the scheduler keeps their tasks on different nodes).
An ingress port published without a number gets the lowest free one of 30000-32767: deterministic,
so the committer's re-decision after a conflict assigns from the fresher state, and recorded in the
`ServiceCreated`/`ServiceUpdated` event, so every reader of the log sees the same number.
"""

from __future__ import annotations

from msgspec.structs import replace

from schemas.service import PortConfig, Service, ServiceSpec
from services.api.errors import InvalidParameter, invalid_argument
from services.kernel.ports import DYNAMIC_FIRST, DYNAMIC_LAST, INGRESS, normal, service_ports
from services.kernel.state import ClusterState

_MODE_WORDS = {INGRESS: "an ingress port", "host": "a host-published port"}


def assign(state: ClusterState, service_id: str, spec: ServiceSpec,
           current: Service | None = None) -> list[PortConfig] | None:
    """The spec's ports with PublishedPort filled in; None when it publishes nothing.

    An update keeps the number an unnumbered port got before, so `docker service update --image`
    does not move a service to another port."""
    requested = [normal(p) for p in (spec.endpoint_spec.ports or () if spec.endpoint_spec else ())]
    if not requested:
        return None
    others = [(svc, p) for svc in state.services.values() if svc.id != service_id for p in service_ports(svc)]
    for port in requested:
        _check_free(port, others)
    kept = {_key(p): p.published_port for p in service_ports(current)} if current is not None else {}
    taken = {p.published_port for _, p in others if p.publish_mode == INGRESS}
    taken |= {p.published_port for p in requested if p.published_port}
    out = []
    for port in requested:
        if port.publish_mode == INGRESS and not port.published_port:
            number = kept.get(_key(port)) or _lowest_free(taken)
            taken.add(number)
            port = replace(port, published_port=number)
        out.append(port)
    return out


def _key(port: PortConfig) -> tuple[str | None, int | None, str | None]:
    return port.protocol, port.target_port, port.publish_mode


def _check_free(port: PortConfig, others: list[tuple[Service, PortConfig]]) -> None:
    if not port.published_port:
        return
    for svc, used in others:
        if used.published_port != port.published_port or used.protocol != port.protocol:
            continue
        if port.publish_mode == INGRESS or used.publish_mode == INGRESS:
            raise invalid_argument(f"port '{port.published_port}' is already in use by service "
                                   f"'{svc.spec.name}' ({svc.id}) as {_MODE_WORDS.get(used.publish_mode or '', '')}")


def _lowest_free(taken: set[int | None]) -> int:
    for number in range(DYNAMIC_FIRST, DYNAMIC_LAST + 1):
        if number not in taken:
            return number
    raise InvalidParameter("rpc error: code = ResourceExhausted desc = "
                           f"no free ports in the dynamic range {DYNAMIC_FIRST}-{DYNAMIC_LAST}: "
                           "remove a service or publish a port by number")
