"""Generic resources (Swarm's `GenericResources`): named kinds a node has a number of, such as GPUs.

A node advertises units either by name (`gpu=GPU-4f2a`, one unit each) or by count (`ssd=3`); a task
reserves a count of a kind (`docker service create --generic-resource gpu=1`). The scheduler accounts
for them like CPU and memory: a node's free units of a kind are what it advertises minus what its
assigned..running tasks reserve. Shoal counts named units but does not hand out particular names
(Swarm's `AssignedGenericResources`), see docs/scheduling.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from schemas.service import DiscreteResourceSpec, GenericResource, NamedResourceSpec

Units = tuple[tuple[str, int], ...]
"""(kind, count) pairs, sorted by kind, no zero counts."""


def units(resources: Iterable[GenericResource] | None) -> Units:
    """Counts per kind: a named resource is one unit, a discrete one its value (never below zero)."""
    if not resources:
        return ()
    total: Counter[str] = Counter()
    for r in resources or ():
        if r.named_resource_spec is not None:
            total[r.named_resource_spec.kind] += 1
        elif r.discrete_resource_spec is not None:
            total[r.discrete_resource_spec.kind] += max(0, r.discrete_resource_spec.value)
    return tuple(sorted((k, n) for k, n in total.items() if n > 0))


def parse(items: Iterable[str]) -> list[GenericResource]:
    """`kind=value` as dockerd's `--node-generic-resource` reads it: an integer value is a count,
    anything else names one unit. Raises ValueError naming the item that is not `kind=value`."""
    out: list[GenericResource] = []
    for item in items:
        kind, sep, value = item.strip().partition("=")
        kind, value = kind.strip(), value.strip()
        if not sep or not kind or not value:
            raise ValueError(f"invalid generic resource {item!r}: expected kind=count or kind=name")
        if value.isdigit():
            out.append(GenericResource(discrete_resource_spec=DiscreteResourceSpec(kind=kind, value=int(value))))
        else:
            out.append(GenericResource(named_resource_spec=NamedResourceSpec(kind=kind, value=value)))
    return out
