"""The filter pipeline (swarm-behaviour 4.2): small checks in Swarm's order, each able to say why it
rejected a node. A node stops at its first failing filter; the pending message counts, per filter,
the nodes it stopped, highest count first (swarm-behaviour 4.3)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from schemas.node import Node
from schemas.service import Platform
from services.kernel.placement.ask import Ask
from services.kernel.placement.nodeinfo import NodeInfo


@dataclass(frozen=True, slots=True)
class Filter:
    name: str
    """Short and stable: a metrics label and the key of an explanation."""
    applies: Callable[[Ask], bool]
    passes: Callable[[Ask, NodeInfo], bool]
    one: str
    many: str
    """`one` for a single node; `many` with `{n}` for several."""
    why: Callable[[Ask, NodeInfo], str]
    """What exactly this node lacks, for a person reading `/shoal/tasks/{id}/explain`."""

    def explain(self, nodes: int) -> str:
        return self.one if nodes == 1 else self.many.format(n=nodes)


def _ready(ask: Ask, info: NodeInfo) -> bool:
    return info.node.status.state == "ready" and info.node.spec.availability == "active"


def _fits(ask: Ask, info: NodeInfo) -> bool:
    return (ask.nano_cpus <= info.nano_cpus and ask.memory_bytes <= info.memory_bytes
            and (not ask.generic or all(n <= info.generic[kind] for kind, n in ask.generic)))


def _matches(ask: Ask, info: NodeInfo) -> bool:
    return all(c.matches(info.node) for c in ask.constraints)


GIB = 1 << 30

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
    return not any(p in info.host_ports for p in ask.host_ports)


def _below_max(ask: Ask, info: NodeInfo) -> bool:
    return info.active_by_service[ask.service_id] < ask.max_replicas


def _why_unready(ask: Ask, info: NodeInfo) -> str:
    return f"node is {info.node.status.state} and {info.node.spec.availability}"


def _why_short(ask: Ask, info: NodeInfo) -> str:
    wanted = [("CPUs", ask.nano_cpus / 1e9, info.nano_cpus / 1e9),
              ("memory GiB", ask.memory_bytes / GIB, info.memory_bytes / GIB),
              *((kind, n, info.generic[kind]) for kind, n in ask.generic)]
    return "; ".join(f"{name}: reserves {want:g}, {have:g} free" for name, want, have in wanted if want > have)


def _why_unmatched(ask: Ask, info: NodeInfo) -> str:
    failed = next(c for c in ask.constraints if not c.matches(info.node))
    return f"constraint {failed.key}{'==' if failed.equal else '!='}{failed.value} not satisfied"


def _why_platform(ask: Ask, info: NodeInfo) -> str:
    have = info.node.description.platform
    return f"node is {have.os or '?'}/{have.architecture or '?'}"


def _why_ports(ask: Ask, info: NodeInfo) -> str:
    taken = sorted(p for p in ask.host_ports if p in info.host_ports)
    return "host ports in use: " + ", ".join(f"{port}/{proto}" for proto, port in taken)


def _why_full(ask: Ask, info: NodeInfo) -> str:
    return f"{info.active_by_service[ask.service_id]} tasks of the service already, at most {ask.max_replicas}"


READY = Filter("not_available", lambda a: True, _ready,
               "1 node not available for new tasks", "{n} nodes not available for new tasks", _why_unready)
RESOURCES = Filter("resources", lambda a: a.nano_cpus > 0 or a.memory_bytes > 0 or bool(a.generic), _fits,
                   "insufficient resources on 1 node", "insufficient resources on {n} nodes", _why_short)
CONSTRAINTS = Filter("constraints", lambda a: bool(a.constraints), _matches,
                     "scheduling constraints not satisfied on 1 node",
                     "scheduling constraints not satisfied on {n} nodes", _why_unmatched)
PLATFORM = Filter("platform", lambda a: bool(a.platforms), _platform,
                  "unsupported platform on 1 node", "unsupported platform on {n} nodes", _why_platform)
HOST_PORTS = Filter("host_port", lambda a: bool(a.host_ports), _ports_free,
                    "host-mode port already in use on 1 node", "host-mode port already in use on {n} nodes", _why_ports)
MAX_REPLICAS = Filter("max_replicas", lambda a: a.max_replicas > 0, _below_max,
                      "max replicas per node limit exceed", "max replicas per node limit exceed", _why_full)

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
