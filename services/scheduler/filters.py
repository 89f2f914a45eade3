"""The filter pipeline (swarm-behaviour 4.2): small checks in Swarm's order, each able to say why it
rejected a node. A node stops at its first failing filter; the pending message counts, per filter,
the nodes it stopped, highest count first (swarm-behaviour 4.3)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from schemas.node import Node
from schemas.service import Platform
from services.scheduler.ask import Ask
from services.scheduler.nodeinfo import NodeInfo


@dataclass(frozen=True, slots=True)
class Filter:
    name: str
    """Short and stable: a metrics label and the key of an explanation."""
    applies: Callable[[Ask], bool]
    passes: Callable[[Ask, NodeInfo], bool]
    one: str
    many: str
    """`one` for a single node; `many` with `{n}` for several."""

    def explain(self, nodes: int) -> str:
        return self.one if nodes == 1 else self.many.format(n=nodes)


def _ready(ask: Ask, info: NodeInfo) -> bool:
    return info.node.status.state == "ready" and info.node.spec.availability == "active"


def _fits(ask: Ask, info: NodeInfo) -> bool:
    return ask.nano_cpus <= info.nano_cpus and ask.memory_bytes <= info.memory_bytes


def _matches(ask: Ask, info: NodeInfo) -> bool:
    return all(c.matches(info.node) for c in ask.constraints)


_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64"}


def _arch(arch: str | None) -> str:
    return _ARCH_ALIASES.get(arch or "", arch or "")


def platform_matches(wanted: Platform, node: Node) -> bool:
    """Empty fields are wildcards; `x86_64` is `amd64` and `aarch64` is `arm64`."""
    have = node.description.platform
    return ((not wanted.architecture or _arch(wanted.architecture) == _arch(have.architecture))
            and (not wanted.os or wanted.os == have.os))


def _platform(ask: Ask, info: NodeInfo) -> bool:
    return any(platform_matches(p, info.node) for p in ask.platforms)


def _ports_free(ask: Ask, info: NodeInfo) -> bool:
    return not (ask.host_ports & info.host_ports)


def _below_max(ask: Ask, info: NodeInfo) -> bool:
    return info.active_by_service[ask.service_id] < ask.max_replicas


READY = Filter("not_available", lambda a: True, _ready,
               "1 node not available for new tasks", "{n} nodes not available for new tasks")
RESOURCES = Filter("resources", lambda a: a.nano_cpus > 0 or a.memory_bytes > 0, _fits,
                   "insufficient resources on 1 node", "insufficient resources on {n} nodes")
CONSTRAINTS = Filter("constraints", lambda a: bool(a.constraints), _matches,
                     "scheduling constraints not satisfied on 1 node",
                     "scheduling constraints not satisfied on {n} nodes")
PLATFORM = Filter("platform", lambda a: bool(a.platforms), _platform,
                  "unsupported platform on 1 node", "unsupported platform on {n} nodes")
HOST_PORTS = Filter("host_port", lambda a: bool(a.host_ports), _ports_free,
                    "host-mode port already in use on 1 node", "host-mode port already in use on {n} nodes")
MAX_REPLICAS = Filter("max_replicas", lambda a: a.max_replicas > 0, _below_max,
                      "max replicas per node limit exceed", "max replicas per node limit exceed")

PIPELINE: tuple[Filter, ...] = (READY, RESOURCES, CONSTRAINTS, PLATFORM, HOST_PORTS, MAX_REPLICAS)


def enabled(ask: Ask) -> list[Filter]:
    """The filters relevant to this ask, in pipeline order (a filter is skipped when irrelevant)."""
    return [f for f in PIPELINE if f.applies(ask)]


def rejection(filters: Sequence[Filter], ask: Ask, info: NodeInfo) -> Filter | None:
    """The first filter the node fails, or None when it may take the task."""
    for f in filters:
        if not f.passes(ask, info):
            return f
    return None


def explain(rejections: Counter[Filter]) -> str:
    """`insufficient resources on 2 nodes; scheduling constraints not satisfied on 1 node`: highest
    count first, ties in pipeline order."""
    ranked = sorted(rejections.items(), key=lambda fc: (-fc[1], PIPELINE.index(fc[0])))
    return "; ".join(f.explain(n) for f, n in ranked if n > 0)
