"""`ClusterState`: the projection every process folds from the log, with its indexes.

The objects inside are the Docker-shaped records from `schemas`, so answering the Engine API is a
lookup, not a translation. Indexes are derived data: they are rebuilt, never stored.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TypeVar

import msgspec

from schemas.base import Record, Version, Wire
from schemas.cluster import SwarmSpec
from schemas.node import Node
from schemas.service import Service
from schemas.task import Task

_K = TypeVar("_K")

SlotKey = tuple[str, int | str]
"""(service id, slot number) for replicated tasks; (service id, node id) for global ones (slot 0)."""


def slot_key(task: Task) -> SlotKey:
    return (task.service_id, task.slot if task.slot else task.node_id)


class Cluster(Record):
    id: str = msgspec.field(default="", name="ID")
    version: Version = Version()
    created_at: str = ""
    updated_at: str = ""
    worker_token: str = ""
    manager_token: str = ""
    spec: SwarmSpec | None = None
    """None until the orchestrator (or `docker swarm update`) records it."""


class Leader(Wire):
    """Who leads a deciding loop, as the log last said (`LeaderElected`)."""

    loop: str = ""
    term: int = 0
    holder: str = ""
    addr: str = ""
    since: str = ""


class FoldStats:
    """What the fold did, counted for metrics; read by a Prometheus collector at scrape time."""

    __slots__ = ("applied", "ignored", "skipped")

    def __init__(self) -> None:
        self.applied: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()
        self.skipped = 0


class ClusterState:
    __slots__ = (
        "cluster",
        "last_service_spec_seq",
        "leaders",
        "nodes",
        "seq",
        "service_by_name",
        "services",
        "stats",
        "tasks",
        "tasks_by_node",
        "tasks_by_service",
        "tasks_by_slot",
        "touched_nodes",
        "touched_services",
        "track_changes",
    )

    def __init__(self) -> None:
        self.seq = 0
        self.cluster: Cluster | None = None
        self.services: dict[str, Service] = {}
        self.nodes: dict[str, Node] = {}
        self.tasks: dict[str, Task] = {}
        self.last_service_spec_seq = 0
        self.leaders: dict[str, Leader] = {}
        self.service_by_name: dict[str, str] = {}
        self.tasks_by_service: defaultdict[str, set[str]] = defaultdict(set)
        self.tasks_by_node: defaultdict[str, set[str]] = defaultdict(set)
        self.tasks_by_slot: defaultdict[SlotKey, set[str]] = defaultdict(set)
        self.stats = FoldStats()
        self.track_changes = False
        self.touched_services: set[str] = set()
        self.touched_nodes: set[str] = set()

    def index_task(self, task: Task) -> None:
        self.tasks_by_service[task.service_id].add(task.id)
        self.tasks_by_slot[slot_key(task)].add(task.id)
        if task.node_id:
            self.tasks_by_node[task.node_id].add(task.id)

    def unindex_task(self, task: Task) -> None:
        _discard(self.tasks_by_service, task.service_id, task.id)
        _discard(self.tasks_by_slot, slot_key(task), task.id)
        if task.node_id:
            _discard(self.tasks_by_node, task.node_id, task.id)

    def tasks_of_service(self, service_id: str) -> list[Task]:
        return [self.tasks[t] for t in self.tasks_by_service.get(service_id, ())]

    def tasks_on_node(self, node_id: str) -> list[Task]:
        return [self.tasks[t] for t in self.tasks_by_node.get(node_id, ())]

    def tasks_in_slot(self, key: SlotKey) -> list[Task]:
        return [self.tasks[t] for t in self.tasks_by_slot.get(key, ())]

    def touch(self, service_id: str = "", node_id: str = "") -> None:
        if self.track_changes:
            if service_id:
                self.touched_services.add(service_id)
            if node_id:
                self.touched_nodes.add(node_id)

    def take_touched(self) -> tuple[set[str], set[str]]:
        """Hand over (and forget) which services and nodes changed since the last call."""
        services, nodes = self.touched_services, self.touched_nodes
        self.touched_services, self.touched_nodes = set(), set()
        return services, nodes


def _discard(index: defaultdict[_K, set[str]], key: _K, task_id: str) -> None:
    ids = index.get(key)
    if ids is not None:
        ids.discard(task_id)
        if not ids:
            del index[key]
