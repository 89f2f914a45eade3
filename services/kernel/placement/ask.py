"""What a task asks of a node, read once per group of identical tasks rather than once per node."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.service import Platform, Service
from schemas.task import Task
from services.kernel import constraints
from services.kernel.placement import generic


@dataclass(frozen=True, slots=True)
class Ask:
    service_id: str
    nano_cpus: int = 0
    memory_bytes: int = 0
    generic: generic.Units = ()
    """Units of generic resources reserved, per kind."""
    constraints: tuple[constraints.Constraint, ...] = ()
    platforms: tuple[Platform, ...] = ()
    host_ports: frozenset[tuple[str, int]] = frozenset()
    """(protocol, published port) pairs published in `host` mode: they need the port free on the node."""
    max_replicas: int = 0
    preferences: tuple[str, ...] = ()
    """Spread descriptors, highest precedence first (`node.labels.dc`)."""

    @classmethod
    def of(cls, task: Task, service: Service | None) -> Ask:
        spec = task.spec
        reservations = spec.resources.reservations if spec.resources else None
        placement = spec.placement
        return cls(
            service_id=task.service_id,
            nano_cpus=(reservations.nano_cpus or 0) if reservations else 0,
            memory_bytes=(reservations.memory_bytes or 0) if reservations else 0,
            generic=generic.units(reservations.generic_resources) if reservations else (),
            constraints=_constraints(placement.constraints if placement else None),
            platforms=tuple(placement.platforms or ()) if placement else (),
            host_ports=published_host_ports(service),
            max_replicas=(placement.max_replicas or 0) if placement else 0,
            preferences=tuple(p.spread.spread_descriptor for p in (placement.preferences or ()) if p.spread)
            if placement else (),
        )


def _constraints(exprs: list[str] | None) -> tuple[constraints.Constraint, ...]:
    """The API rejects bad constraints; one that slipped through disables the filter, as in swarmkit."""
    try:
        return tuple(constraints.parse_all(exprs))
    except constraints.ConstraintError:
        return ()


_NO_PORTS: frozenset[tuple[str, int]] = frozenset()


def published_host_ports(service: Service | None) -> frozenset[tuple[str, int]]:
    endpoint = service.spec.endpoint_spec if service is not None else None
    if endpoint is None or not endpoint.ports:
        return _NO_PORTS
    return frozenset(
        ((p.protocol or "tcp").lower(), p.published_port)
        for p in endpoint.ports
        if p.publish_mode == "host" and p.published_port
    )
