"""Who this agent is: node ids that survive restarts, and the description each node joins with.

The node id is the agent's identity in the log (its tasks' subjects, its heartbeats), so it is
written to the state dir before the node joins: an agent killed right after joining comes back
as the same node, never as a stranger with the first one's tasks stranded.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from schemas.node import EngineDescription, NodeDescription, NodeResources, NodeSpec
from schemas.service import GenericResource, Platform
from services.agent.config import AgentConfig
from services.kernel.ids import new_id
from services.kernel.placement import generic

NODE_ID_FILE = "node-id"


@dataclass(frozen=True, slots=True)
class Identity:
    node_id: str
    spec: NodeSpec
    """Applied on the first join only, with the join token's role: afterwards the operator owns the
    spec (`docker node update`)."""
    description: NodeDescription
    addr: str


def node_ids(state_dir: Path, count: int) -> list[str]:
    """The first `count` ids in `<state-dir>/node-id` (one per line), creating any that are missing."""
    path = state_dir / NODE_ID_FILE
    ids = path.read_text().split() if path.exists() else []
    if len(ids) < count:
        ids += [new_id() for _ in range(count - len(ids))]
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            f.write("\n".join(ids) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    return ids[:count]


def machine_resources() -> NodeResources:
    """What Docker advertises as NCPU and MemTotal: usable CPUs (affinity) and physical memory."""
    cpus = len(os.sched_getaffinity(0))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return NodeResources(nano_cpus=cpus * 1_000_000_000, memory_bytes=memory)


def engine_description(info: dict[str, Any], hostname: str) -> NodeDescription:
    """A node as a Docker engine's /info describes its machine: what Swarm reports for a node."""
    labels = dict(label.partition("=")[::2] for label in info.get("Labels") or [])
    return NodeDescription(
        hostname=hostname or str(info.get("Name", "")),
        platform=Platform(architecture=str(info.get("Architecture", "")), os=str(info.get("OSType", ""))),
        resources=NodeResources(nano_cpus=int(info.get("NCPU", 0)) * 1_000_000_000,
                                memory_bytes=int(info.get("MemTotal", 0)),
                                generic_resources=_engine_generic(info.get("GenericResources"))),
        engine=EngineDescription(engine_version=str(info.get("ServerVersion", "")), labels=labels or None),
    )


def _engine_generic(raw: object) -> list[GenericResource] | None:
    """dockerd's `--node-generic-resource`s; a shape this version does not know is ignored, not fatal."""
    try:
        return msgspec.convert(raw or [], list[GenericResource]) or None
    except msgspec.ValidationError:
        return None


def identities(config: AgentConfig, engine_info: dict[str, Any] | None = None) -> list[Identity]:
    ids = node_ids(config.state_dir, config.nodes)
    if config.executor == "sim":
        resources = NodeResources(nano_cpus=int(config.sim_cpus * 1e9), memory_bytes=config.sim_memory_bytes)
    else:
        resources = machine_resources()
    spec = NodeSpec(labels=config.labels or None)
    engine = EngineDescription(engine_version=f"shoal-{config.executor}")
    plat = Platform(architecture=platform.machine(), os=platform.system().lower())
    advertised = generic.parse(config.generic_resources) or None
    out = []
    for i, node_id in enumerate(ids, start=1):
        hostname = config.hostname if len(ids) == 1 else f"{config.hostname}-{i}"
        description = (engine_description(engine_info, hostname) if engine_info is not None else
                       NodeDescription(hostname=hostname, platform=plat, resources=resources, engine=engine))
        if advertised is not None:
            description = msgspec.structs.replace(description, resources=msgspec.structs.replace(
                description.resources, generic_resources=advertised))
        out.append(Identity(node_id=node_id, spec=spec, description=description, addr=config.addr))
    return out
