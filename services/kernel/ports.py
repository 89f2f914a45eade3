"""Published ports as every component reads them: one normalised list per service.

The spec may leave Protocol, PublishMode and (for ingress) PublishedPort empty; the API assigns the
missing PublishedPort when it writes the service (`ServiceCreated.Ports`), and the fold keeps the
result in `Service.Endpoint.Ports`. Logs written before ports were assigned still read correctly:
their ports come from the spec, minus the ones that never got a number.
"""

from __future__ import annotations

from msgspec.structs import replace

from schemas.service import Endpoint, PortConfig, Service

INGRESS = "ingress"
HOST = "host"
TCP = "tcp"
UDP = "udp"

DYNAMIC_FIRST = 30000
DYNAMIC_LAST = 32767
"""Swarm's range for ingress ports published without a number."""


def normal(port: PortConfig) -> PortConfig:
    """Empty protocol and mode spelled out as Docker shows them."""
    return replace(port, protocol=(port.protocol or TCP).lower(), publish_mode=port.publish_mode or INGRESS)


def endpoint_ports(endpoint: Endpoint | None) -> list[PortConfig]:
    """The ports an endpoint publishes, PublishedPort assigned where the API assigned one."""
    if endpoint is None:
        return []
    if endpoint.ports is not None:
        return [normal(p) for p in endpoint.ports]
    spec_ports = endpoint.spec.ports if endpoint.spec is not None else None
    return [normal(p) for p in spec_ports or () if p.published_port]


def service_ports(svc: Service) -> list[PortConfig]:
    return endpoint_ports(svc.endpoint)


def ingress_ports(svc: Service) -> list[PortConfig]:
    return [p for p in service_ports(svc) if p.publish_mode == INGRESS and p.published_port]
