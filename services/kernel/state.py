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
from schemas.service import Service, TaskSpec
from schemas.task import Task, TaskState

_K = TypeVar("_K")

_RUNNING = TaskState.RUNNING

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
        "progressed_services",
        "seq",
        "service_by_name",
        "service_tasks_running",
        "services",
        "stats",
        "task_specs",
        "task_tally",
        "tasks",
        "tasks_by_node",
        "tasks_by_service",
        "touched_nodes",
        "touched_services",
        "touched_tasks",
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
        self.task_tally: dict[str, dict[str, int]] = {}
        """Tasks per observed, then desired state (their values), kept as the fold goes: counting
        100,000 tasks on every scrape of `/metrics` cost ~0.2 s (docs/performance.md, session 5).
        Keyed by values, not enum members (an enum's `__hash__` is Python code), and nested, not by
        tuple, so counting allocates nothing (a tuple per event brought the collector round sooner)."""
        self.task_specs: dict[str, TaskSpec] = {}
        """Per service holding tasks: the spec its newest task carried. Every task arrives with its
        own decoded copy of its service's spec, whose lists (command, constraints...) are objects
        the cyclic GC scans: at 100,000 tasks, most of what it scanned in every process, and ~100 MB
        of each process's memory. A task whose spec is equal holds this one."""
        self.service_tasks_running: dict[str, list[int]] = {}
        """Per service holding tasks: [its tasks meant to run (desired running), of those running]."""
        self.stats = FoldStats()
        self.track_changes = False
        self.touched_services: set[str] = set()
        self.touched_nodes: set[str] = set()
        self.touched_tasks: dict[str, str] | None = None
        """Tasks changed (with the node each was on) since the reader that set this to `{}` last took
        it; None: not kept. Only the scheduler reads it (its per-node tallies re-count changed tasks
        only), so only its state pays for it; the other processes' fold skips it."""
        self.progressed_services: set[str] | None = None
        """Services whose only change since the reader that set this to a set last took it is a task
        moving forward, at most to `running` (`progress`); None: such a change touches the service like
        any other. Only the orchestrator keeps it: for a replicated service with no update in flight
        nothing follows from that, and re-deciding every such service was a quarter of its CPU."""

    def add_task(self, task: Task) -> None:
        """A task the state did not hold: stored, indexed and counted, its spec shared when equal to
        its service's last one (specs are never changed in place)."""
        shared = self.task_specs.get(task.service_id)
        if shared is not None and shared == task.spec:
            task.spec = shared
        else:
            self.task_specs[task.service_id] = task.spec
        self.tasks[task.id] = task
        self.index_task(task)
        self._count(task, 1)

    def remove_task(self, task_id: str) -> Task | None:
        task = self.tasks.pop(task_id, None)
        if task is not None:
            self.unindex_task(task)
            self._count(task, -1)
        return task

    def recount(self, task: Task, observed: TaskState, desired: TaskState) -> None:
        """After the fold changed a held task's observed or desired state (from these). Runs on
        most task events of every process, hence plain dict and list operations written out."""
        now_observed, now_desired = task.status.state, task.desired_state
        if now_observed is observed and now_desired is desired:
            return
        tally = self.task_tally
        tally[observed._value_][desired._value_] -= 1
        _tally(tally, now_observed._value_, now_desired._value_, 1)
        was_meant, meant = desired is _RUNNING, now_desired is _RUNNING
        if was_meant or meant:
            counts = self.service_tasks_running[task.service_id]
            if was_meant is not meant:
                counts[0] += 1 if meant else -1
            was_running, running = was_meant and observed is _RUNNING, meant and now_observed is _RUNNING
            if was_running is not running:
                counts[1] += 1 if running else -1

    def _count(self, task: Task, n: int) -> None:
        observed, desired = task.status.state, task.desired_state
        _tally(self.task_tally, observed._value_, desired._value_, n)
        sid = task.service_id
        counts = self.service_tasks_running.get(sid)
        if counts is None:
            counts = self.service_tasks_running[sid] = [0, 0]
        if desired is _RUNNING:
            counts[0] += n
            if observed is _RUNNING:
                counts[1] += n
        if n < 0 and sid not in self.tasks_by_service:  # the service's last task went
            del self.service_tasks_running[sid]
            self.task_specs.pop(sid, None)

    def index_task(self, task: Task) -> None:
        self.tasks_by_service[task.service_id].add(task.id)
        if task.node_id:
            self.tasks_by_node[task.node_id].add(task.id)

    def unindex_task(self, task: Task) -> None:
        _discard(self.tasks_by_service, task.service_id, task.id)
        if task.node_id:
            _discard(self.tasks_by_node, task.node_id, task.id)

    def tasks_of_service(self, service_id: str) -> list[Task]:
        return [self.tasks[t] for t in self.tasks_by_service.get(service_id, ())]

    def tasks_on_node(self, node_id: str) -> list[Task]:
        return [self.tasks[t] for t in self.tasks_by_node.get(node_id, ())]

    def touch(self, service_id: str = "", node_id: str = "", task_id: str = "") -> None:
        if self.track_changes:
            if service_id:
                self.touched_services.add(service_id)
            if node_id:
                self.touched_nodes.add(node_id)
            if task_id and self.touched_tasks is not None:
                self.touched_tasks[task_id] = node_id

    def progress(self, service_id: str, node_id: str, task_id: str) -> None:
        """A task was created, assigned, found no node, or moved forward, at most to `running`."""
        if self.progressed_services is None:
            self.touch(service_id, node_id, task_id)
            return
        if service_id not in self.touched_services:
            self.progressed_services.add(service_id)
        self.touch(node_id=node_id, task_id=task_id)

    def take_touched(self) -> tuple[set[str], set[str]]:
        """Hand over (and forget) which services and nodes changed since the last call."""
        services, nodes = self.touched_services, self.touched_nodes
        self.touched_services, self.touched_nodes = set(), set()
        return services, nodes


def _tally(tally: dict[str, dict[str, int]], observed: str, desired: str, n: int) -> None:
    row = tally.get(observed)
    if row is None:
        row = tally[observed] = {}
    row[desired] = row.get(desired, 0) + n


def _discard(index: defaultdict[_K, set[str]], key: _K, task_id: str) -> None:
    ids = index.get(key)
    if ids is not None:
        ids.discard(task_id)
        if not ids:
            del index[key]
