"""How fast a process rebuilds the cluster state from the log, against the limit of reading it.

Builds a log of a cluster's life (nodes joining, draining and going down; services created, scaled,
updated and removed; tasks through their states, some failing and replaced, pruned from history) in
a real nats-server, then measures in the same run, on the same log:

- raw read: nats-py's ordered push consumer with a callback that only counts (the limit);
- replay: `Projection.start()` from seq 1, i.e. read + decode + fold, as every process starts;
- decode and fold alone, in memory, over the same entries;
- start-up from the newest snapshot (object store) with a fresh `Projection`.

    python -m benchmarks.replay --events 1000000

The last line printed is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from schemas.base import Version
from schemas.codec import decode, encode
from schemas.events import (
    AnyEvent,
    ClusterCreated,
    Envelope,
    NodeJoined,
    NodeStatusChanged,
    NodeUpdated,
    ServiceCreated,
    ServiceRemoved,
    ServiceUpdated,
    TaskAssigned,
    TaskCreated,
    TaskDesiredStateChanged,
    TaskRemoved,
    TaskStatusChanged,
    UpdateStatusChanged,
)
from schemas.node import NodeDescription, NodeResources, NodeSpec
from schemas.service import (
    ContainerSpec,
    ReplicatedService,
    ResourceLimits,
    Resources,
    RestartPolicy,
    ServiceMode,
    ServiceSpec,
    TaskSpec,
    UpdateConfig,
    UpdateStatus,
)
from schemas.task import ContainerStatus, Task, TaskState, TaskStatus
from services.kernel import snapshot, subjects
from services.kernel.eventlog import Append
from services.kernel.fold import apply
from services.kernel.ids import format_ns
from services.kernel.jetstream import JetStreamLog, connect, ensure_stream
from services.kernel.projection import Projection
from services.kernel.snapshot import ObjectStoreSnapshots
from services.kernel.state import ClusterState
from tests.nats_server import nats_server

STREAM = "SHOAL"
HISTORY_PER_SLOT = 4
"""Terminal tasks kept per slot before the oldest is removed (Swarm's task history limit is 5)."""

_STARTING = (
    (TaskState.ACCEPTED, "accepted"),
    (TaskState.PREPARING, "preparing"),
    (TaskState.READY, "prepared"),
    (TaskState.STARTING, "starting"),
    (TaskState.RUNNING, "started"),
)


# -- the cluster's life ------------------------------------------------------------------------


@dataclass
class _Service:
    id: str
    spec: ServiceSpec
    spec_seq: int
    generation: int = 0
    slots: dict[int, str] = field(default_factory=dict)
    """Slot -> the task currently meant to run in it."""
    history: dict[int, deque[str]] = field(default_factory=dict)


@dataclass
class _Task:
    task: Task
    node: str = ""


class ClusterLife:
    """A seeded simulation of what the api, orchestrator, scheduler and agents would append.

    It keeps its own small model of the cluster (not `ClusterState`), so the log it writes is an
    independent input to the fold, with subjects as `services.kernel.routing` assigns them.
    """

    def __init__(self, seed: int, nodes: int, services: int) -> None:
        self.rng = random.Random(seed)
        self.max_services = services
        self.clock_ns = 1_767_225_600 * 10**9
        self.seq = 0
        self.out: list[tuple[str, bytes]] = []
        self.nodes: dict[str, str] = {}
        """Node id -> availability."""
        self.services: dict[str, _Service] = {}
        self.tasks: dict[str, _Task] = {}
        self.names = 0
        self._emit(subjects.CLUSTER, "api", ClusterCreated(cluster_id=self._id(), worker_token="SWMTKN-1-w"))
        for _ in range(nodes):
            self.join_node()

    def _id(self) -> str:
        n = self.rng.getrandbits(128)
        return "".join("0123456789abcdefghijklmnopqrstuvwxyz"[(n // 36**i) % 36] for i in range(25))

    def _emit(self, subject: str, actor: str, event: AnyEvent) -> None:
        self.clock_ns += self.rng.randrange(50_000, 2_000_000)
        self.seq += 1
        env = Envelope(id=self._id(), time=format_ns(self.clock_ns), actor=actor, event=event)
        self.out.append((subject, encode(env)))

    def step(self) -> None:
        """One operator action or incident, with every event the cluster writes in response."""
        roll = self.rng.random()
        if len(self.services) < self.max_services and roll < 0.30:
            self.create_service()
        elif not self.services:
            return
        elif roll < 0.50:
            self.scale_service()
        elif roll < 0.65:
            self.update_service()
        elif roll < 0.85:
            self.fail_task()
        elif roll < 0.90:
            self.remove_service()
        elif roll < 0.94:
            self.drain_node()
        elif roll < 0.99:
            self.node_blip()
        else:
            self.join_node()

    # nodes

    def join_node(self) -> None:
        node_id = self._id()
        self.nodes[node_id] = "active"
        desc = NodeDescription(hostname=f"node-{len(self.nodes)}",
                               resources=NodeResources(nano_cpus=4_000_000_000, memory_bytes=8 << 30))
        self._emit(subjects.node(node_id, "agent"), f"agent:{node_id}",
                   NodeJoined(node_id=node_id, spec=NodeSpec(role="worker"), description=desc, addr="10.0.0.1"))

    def drain_node(self) -> None:
        node_id = self.rng.choice(list(self.nodes))
        drain = self.nodes[node_id] == "active"
        self.nodes[node_id] = "drain" if drain else "active"
        self._emit(subjects.node(node_id, "spec"), "api", NodeUpdated(
            node_id=node_id, spec=NodeSpec(role="worker", availability=self.nodes[node_id])))
        if drain:
            moved = [t for t in self.tasks.values() if t.node == node_id]
            self._replace(moved, "task: node drained")

    def node_blip(self) -> None:
        node_id = self.rng.choice(list(self.nodes))
        self._emit(subjects.node(node_id, "status"), "orchestrator",
                   NodeStatusChanged(node_id=node_id, state="down", message="heartbeat failure"))
        self._emit(subjects.node(node_id, "status"), "orchestrator", NodeStatusChanged(node_id=node_id, state="ready"))

    # services

    def _spec(self, name: str, replicas: int, generation: int) -> ServiceSpec:
        return ServiceSpec(
            name=name,
            labels={"com.example.team": "payments"},
            task_template=TaskSpec(
                container_spec=ContainerSpec(image="registry.local/web:1.4", command=["/bin/server"],
                                             env=[f"GENERATION={generation}", "LOG_LEVEL=info"]),
                resources=Resources(limits=ResourceLimits(nano_cpus=500_000_000, memory_bytes=256 << 20)),
                restart_policy=RestartPolicy(condition="any", delay=5_000_000_000),
            ),
            mode=ServiceMode(replicated=ReplicatedService(replicas=replicas)),
            update_config=UpdateConfig(parallelism=2, failure_action="pause", order="stop-first"),
        )

    def create_service(self) -> None:
        self.names += 1
        replicas = self.rng.choice((1, 2, 3, 3, 5, 5, 10, 20))
        svc = _Service(id=self._id(), spec=self._spec(f"svc-{self.names}", replicas, 0), spec_seq=self.seq + 1)
        self._emit(subjects.service(svc.id, "spec"), "api:admin", ServiceCreated(service_id=svc.id, spec=svc.spec))
        self.services[svc.id] = svc
        self._start(svc, list(range(1, replicas + 1)))

    def _replicas(self, svc: _Service) -> int:
        assert svc.spec.mode is not None and svc.spec.mode.replicated is not None
        return svc.spec.mode.replicated.replicas or 0

    def scale_service(self) -> None:
        svc = self.rng.choice(list(self.services.values()))
        old = self._replicas(svc)
        new = max(0, old + self.rng.choice((-3, -2, -1, 1, 2, 3, 5)))
        svc.spec = msgspec.structs.replace(svc.spec, mode=ServiceMode(replicated=ReplicatedService(replicas=new)))
        svc.spec_seq = self.seq + 1
        self._emit(subjects.service(svc.id, "spec"), "api:admin", ServiceUpdated(service_id=svc.id, spec=svc.spec))
        if new > old:
            self._start(svc, list(range(old + 1, new + 1)))
        for slot in range(new + 1, old + 1):
            self._stop(svc, [self.tasks[svc.slots.pop(slot)]], TaskState.SHUTDOWN)

    def update_service(self) -> None:
        svc = self.rng.choice(list(self.services.values()))
        svc.generation += 1
        svc.spec = self._spec(svc.spec.name, self._replicas(svc), svc.generation)
        svc.spec_seq = self.seq + 1
        self._emit(subjects.service(svc.id, "spec"), "api:admin", ServiceUpdated(service_id=svc.id, spec=svc.spec))
        self._update_status(svc, "updating", "update in progress")
        slots = sorted(svc.slots)
        for i in range(0, len(slots), 2):
            group = slots[i:i + 2]
            self._stop(svc, [self.tasks[svc.slots[s]] for s in group], TaskState.SHUTDOWN)
            self._start(svc, group)
        self._update_status(svc, "completed", "update completed")

    def _update_status(self, svc: _Service, state: str, message: str) -> None:
        self._emit(subjects.service(svc.id, "update"), "orchestrator:1", UpdateStatusChanged(
            service_id=svc.id, update_status=UpdateStatus(state=state, started_at=format_ns(self.clock_ns),
                                                          message=message)))

    def remove_service(self) -> None:
        svc = self.services.pop(self.rng.choice(list(self.services)))
        self._emit(subjects.service(svc.id, "spec"), "api:admin", ServiceRemoved(service_id=svc.id))
        live = [self.tasks[t] for t in svc.slots.values()]
        self._stop(svc, live, TaskState.REMOVE)
        for t in live:
            self._remove(t)
        for history in svc.history.values():
            for task_id in history:
                self._remove(self.tasks[task_id])

    # tasks

    def _start(self, svc: _Service, slots: list[int]) -> None:
        """A group of tasks as the orchestrator, scheduler and agents write them: phase by phase."""
        ready = [n for n, availability in self.nodes.items() if availability == "active"] or list(self.nodes)
        started = []
        for slot in slots:
            task = Task(id=self._id(), labels={}, spec=svc.spec.task_template or TaskSpec(),
                        spec_version=Version(svc.spec_seq), service_id=svc.id, service_name=svc.spec.name,
                        slot=slot, status=TaskStatus(state=TaskState.NEW, message="created"))
            t = _Task(task)
            self.tasks[task.id] = t
            svc.slots[slot] = task.id
            started.append(t)
            self._emit(subjects.task("", task.id, "desired"), "orchestrator:1", TaskCreated(task=task))
        for t in started:
            t.node = self.rng.choice(ready)
            t.task = msgspec.structs.replace(t.task, node_id=t.node)
            self._emit(subjects.task(t.node, t.task.id, "placement"), "scheduler:1",
                       TaskAssigned(task=t.task, node_id=t.node))
        for state, message in _STARTING:
            for t in started:
                running = state == TaskState.RUNNING
                status = TaskStatus(timestamp=format_ns(self.clock_ns), state=state, message=message,
                                    container_status=ContainerStatus(container_id=t.task.id * 2 + "abcdefghijklmn",
                                                                     pid=self.rng.randrange(100, 60000))
                                    if running else None)
                self._emit(subjects.task(t.node, t.task.id, "status"), f"agent:{t.node}",
                           TaskStatusChanged(task_id=t.task.id, status=status))

    def _stop(self, svc: _Service, tasks: list[_Task], desired: TaskState) -> None:
        for t in tasks:
            self._emit(subjects.task(t.node, t.task.id, "desired"), "orchestrator:1",
                       TaskDesiredStateChanged(task_id=t.task.id, desired_state=desired))
        for t in tasks:
            self._emit(subjects.task(t.node, t.task.id, "status"), f"agent:{t.node}", TaskStatusChanged(
                task_id=t.task.id, status=TaskStatus(timestamp=format_ns(self.clock_ns), state=TaskState.SHUTDOWN,
                                                     message="shutdown")))
            if desired != TaskState.REMOVE:
                self._retire(svc, t)

    def _retire(self, svc: _Service, t: _Task) -> None:
        """Keep a finished task as history; prune the slot's oldest beyond the limit."""
        history = svc.history.setdefault(t.task.slot, deque())
        history.append(t.task.id)
        if len(history) > HISTORY_PER_SLOT:
            self._remove(self.tasks[history.popleft()])

    def _remove(self, t: _Task) -> None:
        del self.tasks[t.task.id]
        self._emit(subjects.task(t.node, t.task.id, "desired"), "orchestrator:1", TaskRemoved(task_id=t.task.id))

    def _replace(self, tasks: list[_Task], reason: str) -> None:
        for t in tasks:
            svc = self.services[t.task.service_id]
            if svc.slots.get(t.task.slot) != t.task.id:
                continue
            self._stop(svc, [t], TaskState.SHUTDOWN)
            self._start(svc, [t.task.slot])

    def fail_task(self) -> None:
        svc = self.rng.choice(list(self.services.values()))
        if not svc.slots:
            return
        t = self.tasks[svc.slots[self.rng.choice(list(svc.slots))]]
        self._emit(subjects.task(t.node, t.task.id, "status"), f"agent:{t.node}", TaskStatusChanged(
            task_id=t.task.id, status=TaskStatus(timestamp=format_ns(self.clock_ns), state=TaskState.FAILED,
                                                 message="started", err="task: non-zero exit (1)",
                                                 container_status=ContainerStatus(exit_code=1))))
        self._emit(subjects.task(t.node, t.task.id, "desired"), "orchestrator:1",
                   TaskDesiredStateChanged(task_id=t.task.id, desired_state=TaskState.SHUTDOWN))
        self._retire(svc, t)
        self._start(svc, [t.task.slot])

    def batches(self, events: int, size: int) -> Iterator[list[tuple[str, bytes]]]:
        """Exactly `events` entries, `size` at a time (the story is cut wherever the count ends)."""
        sent = 0
        while sent < events:
            while len(self.out) < size:
                self.step()
            batch, self.out = self.out[:size], self.out[size:]
            batch = batch[:events - sent]
            sent += len(batch)
            yield batch


# -- measurements ------------------------------------------------------------------------------


@dataclass
class Figures:
    events: int
    build_s: float = 0.0
    raw_read_s: list[float] = field(default_factory=list)
    replay_s: list[float] = field(default_factory=list)
    raw_read_cpu_s: list[float] = field(default_factory=list)
    replay_cpu_s: list[float] = field(default_factory=list)
    decode_s: float = 0.0
    fold_s: float = 0.0
    snapshot_bytes: int = 0
    snapshot_take_s: float = 0.0
    snapshot_write_s: float = 0.0
    snapshot_start_s: float = 0.0
    tasks: int = 0
    services: int = 0
    nodes: int = 0
    states_agree: bool = False
    applied: dict[str, int] = field(default_factory=dict)

    def rate(self, seconds: float) -> float:
        return self.events / seconds if seconds else 0.0

    def summary(self) -> dict[str, object]:
        raw, replay = self.rate(min(self.raw_read_s)), self.rate(min(self.replay_s))
        return {
            "events": self.events,
            "raw_read_per_s": round(raw),
            "replay_per_s": round(replay),
            "replay_vs_raw": round(replay / raw, 3),
            "raw_read_cpu_us": round(min(self.raw_read_cpu_s) / self.events * 1e6, 2),
            "replay_cpu_us": round(min(self.replay_cpu_s) / self.events * 1e6, 2),
            "replay_vs_raw_cpu": round(min(self.raw_read_cpu_s) / min(self.replay_cpu_s), 3),
            "decode_per_s": round(self.rate(self.decode_s)),
            "fold_per_s": round(self.rate(self.fold_s)),
            "snapshot_start_s": round(self.snapshot_start_s, 3),
            "snapshot_bytes": self.snapshot_bytes,
            "snapshot_take_s": round(self.snapshot_take_s, 3),
            "snapshot_write_s": round(self.snapshot_write_s, 3),
            "build_per_s": round(self.rate(self.build_s)),
            "state": {"tasks": self.tasks, "services": self.services, "nodes": self.nodes},
            "states_agree": self.states_agree,
        }


async def build(nc: Client, args: argparse.Namespace, figures: Figures) -> list[tuple[str, bytes]]:
    """Append the cluster's life, `args.batch` entries pipelined at a time; keep the subjects and
    bytes for the in-memory measurements."""
    log = JetStreamLog(nc, STREAM)
    life = ClusterLife(args.seed, args.nodes, args.services)
    kept: list[tuple[str, bytes]] = []
    started = time.perf_counter()
    for batch in life.batches(args.events, args.batch):
        results = await log.append([Append(subject, data, f"bench-{len(kept) + i}")
                                    for i, (subject, data) in enumerate(batch)])
        if not all(isinstance(r, int) for r in results):
            raise RuntimeError(f"append refused: {results[:3]}")
        kept.extend(batch)
        if len(kept) % 100_000 < args.batch:
            print(f"  built {len(kept):,} events", file=sys.stderr)
    figures.build_s = time.perf_counter() - started
    return kept


async def raw_read(nc: Client, events: int) -> float:
    """The limit: an ordered push consumer whose callback only counts."""
    done = asyncio.get_running_loop().create_future()
    count = 0

    async def count_one(msg: Msg) -> None:
        nonlocal count
        count += 1
        if count == events:
            done.set_result(None)

    started = time.perf_counter()
    sub = await nc.jetstream().subscribe(subjects.ALL, cb=count_one, ordered_consumer=True, stream=STREAM,
                                         config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL))
    await done
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    return elapsed


async def replay(nc: Client) -> tuple[float, ClusterState]:
    projection = Projection(JetStreamLog(nc, STREAM))
    started = time.perf_counter()
    await projection.start()
    elapsed = time.perf_counter() - started
    await projection.stop()
    return elapsed, projection.state


def fold_in_memory(entries: list[tuple[str, bytes]], chunk: int = 100_000) -> tuple[float, float, ClusterState]:
    """Decode and fold timed apart; envelopes decoded a chunk at a time to bound memory.

    While a chunk is folded, everything already alive (its envelopes, the state so far) is frozen
    out of the garbage collector's scans: a real process drops each envelope once applied, so
    scanning 100,000 held ones would be this benchmark's cost, not the fold's. What the fold
    allocates is collected as usual.
    """
    state = ClusterState()
    decode_s = fold_s = 0.0
    for start in range(0, len(entries), chunk):
        t0 = time.perf_counter()
        envelopes = [(subject, decode(data)) for subject, data in entries[start:start + chunk]]
        gc.freeze()
        t1 = time.perf_counter()
        for seq, (subject, env) in enumerate(envelopes, start + 1):
            apply(state, seq, env, subject)
        fold_s += time.perf_counter() - t1
        decode_s += t1 - t0
        gc.unfreeze()
    return decode_s, fold_s, state


async def snapshot_start(nc: Client, state: ClusterState, figures: Figures) -> ClusterState:
    snapshots = ObjectStoreSnapshots(nc.jetstream(), STREAM)
    t0 = time.perf_counter()
    data = snapshot.take(state)
    t1 = time.perf_counter()
    await snapshots.save("bench", data)
    figures.snapshot_take_s, figures.snapshot_write_s = t1 - t0, time.perf_counter() - t1
    figures.snapshot_bytes = len(data)
    fresh = Projection(JetStreamLog(nc, STREAM), snapshots=ObjectStoreSnapshots(nc.jetstream(), STREAM),
                       snapshot_name="bench")
    started = time.perf_counter()
    await fresh.start()
    figures.snapshot_start_s = time.perf_counter() - started
    await fresh.stop()
    return fresh.state


async def measure(args: argparse.Namespace, store: Path) -> Figures:
    figures = Figures(events=args.events)
    with nats_server(store=store) as server:
        nc = await connect([server.url], "bench")
        await ensure_stream(nc, STREAM)
        print(f"building {args.events:,} events ...", file=sys.stderr)
        entries = await build(nc, args, figures)
        gc.collect()
        figures.decode_s, figures.fold_s, folded = fold_in_memory(entries)
        expected = snapshot.take(folded)
        del entries, folded
        gc.collect()
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}: raw read, then replay ...", file=sys.stderr)
            cpu = time.process_time()
            figures.raw_read_s.append(await raw_read(nc, args.events))
            figures.raw_read_cpu_s.append(time.process_time() - cpu)
            cpu = time.process_time()
            elapsed, replayed = await replay(nc)
            figures.replay_cpu_s.append(time.process_time() - cpu)
            figures.replay_s.append(elapsed)
        restored = await snapshot_start(nc, replayed, figures)
        figures.states_agree = snapshot.take(restored) == snapshot.take(replayed) == expected
        figures.tasks, figures.services, figures.nodes = (len(replayed.tasks), len(replayed.services),
                                                          len(replayed.nodes))
        figures.applied = dict(replayed.stats.applied)
        await nc.close()
    return figures


def table(figures: Figures, args: argparse.Namespace) -> str:
    s = figures.summary()
    rows = [
        ("build (pipelined appends)", f"{s['build_per_s']:>12,} ev/s", f"{figures.build_s:.1f} s"),
        ("raw read (nats-py, count only)", f"{s['raw_read_per_s']:>12,} ev/s",
         " ".join(f"{x:.2f}" for x in figures.raw_read_s) + " s"),
        ("replay (Projection from seq 1)", f"{s['replay_per_s']:>12,} ev/s",
         " ".join(f"{x:.2f}" for x in figures.replay_s) + f" s   = {s['replay_vs_raw']:.2f} x raw"),
        ("CPU per event: raw / replay", f"{s['raw_read_cpu_us']:>9} us", f"{s['replay_cpu_us']} us"
         f"   = {s['replay_vs_raw_cpu']:.2f} x raw (this process only; nats-server shares the cores)"),
        ("decode alone (100k envelopes held)", f"{s['decode_per_s']:>12,} ev/s", f"{figures.decode_s:.2f} s"),
        ("fold alone (apply)", f"{s['fold_per_s']:>12,} ev/s", f"{figures.fold_s:.2f} s"),
        ("snapshot start (load + tail)", f"{figures.snapshot_start_s:>12.3f} s",
         f"{figures.snapshot_bytes / 1e6:.1f} MB, take {figures.snapshot_take_s:.2f} s,"
         f" write {figures.snapshot_write_s:.2f} s"),
    ]
    lines = [f"{a:<32} {b:<18} {c}" for a, b, c in rows]
    lines.append(f"final state: {figures.tasks:,} tasks, {figures.services:,} services, {figures.nodes} nodes;"
                 f" replay, in-memory fold and snapshot start agree: {figures.states_agree}")
    lines.append("events applied: " + ", ".join(f"{k} {v:,}" for k, v in sorted(figures.applied.items())))
    lines.append(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    lines.append("reproduce: python -m benchmarks.replay " + " ".join(sys.argv[1:] or [f"--events {args.events}"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=1000, help="entries appended per pipelined burst")
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--services", type=int, default=300, help="services alive at most at once")
    p.add_argument("--rounds", type=int, default=2, help="raw read and replay alternate this many times; best kept")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        figures = asyncio.run(measure(args, Path(tmp)))
    print(table(figures, args))
    print(json.dumps(figures.summary()))


if __name__ == "__main__":
    main()
