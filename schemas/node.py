"""Nodes: what an agent reports about its machine, what operators set, what liveness says."""

from __future__ import annotations

from typing import Any

import msgspec

from schemas.base import Labels, Record, Version, Wire
from schemas.service import GenericResource, Platform


class NodeSpec(Record):
    name: str | None = None
    labels: Labels | None = None
    role: str = "worker"
    availability: str = "active"


class NodeResources(Record):
    nano_cpus: int = msgspec.field(default=0, name="NanoCPUs")
    memory_bytes: int = 0
    generic_resources: list[GenericResource] | None = None
    """What the agent advertises (`--generic-resource gpu=2`, dockerd's `--node-generic-resource`)."""


class EngineDescription(Wire):
    engine_version: str = ""
    labels: Labels | None = None
    plugins: list[dict[str, Any]] | None = None


class NodeDescription(Record):
    hostname: str = ""
    platform: Platform = msgspec.field(default_factory=Platform)
    resources: NodeResources = msgspec.field(default_factory=NodeResources)
    engine: EngineDescription = msgspec.field(default_factory=EngineDescription)


class NodeStatus(Record):
    state: str = "unknown"
    message: str | None = None
    addr: str = ""


class ManagerStatus(Record):
    leader: bool = False
    reachability: str = "reachable"
    addr: str = ""


class Node(Record):
    id: str = msgspec.field(default="", name="ID")
    version: Version = Version()
    created_at: str = ""
    updated_at: str = ""
    spec: NodeSpec = msgspec.field(default_factory=NodeSpec)
    description: NodeDescription = msgspec.field(default_factory=NodeDescription)
    status: NodeStatus = msgspec.field(default_factory=NodeStatus)
    manager_status: ManagerStatus | None = None
    status_since: str = ""
    """When `Status.State` last changed (Shoal's; clients ignore it): how long a node has been down."""
