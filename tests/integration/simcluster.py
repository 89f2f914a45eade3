"""A cluster of real Shoal components in one process, for orchestration scenarios: the orchestrator
(with heartbeat liveness) and the scheduler loops, and one real `Agent` per node driving the `sim`
executor, all over a real nats-server.

Each node's `SimWorld` outlives its agent, as a machine outlives its agent process: stopping an
agent is a node falling silent (a partition), starting it again is the node coming back to find
its simulated containers still running.

Every entry the observer applies is kept (`events`) and checked: at no point may a slot have two
tasks wanted running (unless a scenario moves tasks start-first on purpose, `one_per_slot=False`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from schemas.events import AnyEvent, ClusterCreated, Envelope
from schemas.node import NodeDescription, NodeResources, NodeSpec
from schemas.task import Task, TaskState
from services.agent.agent import Agent
from services.agent.executors.sim import SimExecutor, SimWorld
from services.agent.identity import Identity
from services.kernel.fold import apply
from services.kernel.jetstream import JetStreamLog
from services.kernel.projection import Projection
from services.kernel.reconcile import Reconciler
from services.kernel.state import ClusterState
from services.kernel.writer import Intent, Writer
from services.orchestrator import service as orchestrator
from services.orchestrator.decide import Orchestrator, Settings
from services.orchestrator.liveness import HEARTBEATS_SUBJECT, Liveness
from services.scheduler import service as scheduler

HEARTBEAT_S = 0.1
GRACE_S = 1.5
"""Fifteen missed heartbeats: quick to notice a stopped agent, yet never fooled by a loaded machine."""
SIM_START_S = 0.02
TOKEN = "SWMTKN-1-sim-worker"

E = TypeVar("E")


@dataclass
class SimNode:
    identity: Identity
    world: SimWorld = field(default_factory=SimWorld)
    running: asyncio.Task[None] | None = None


@dataclass
class SimCluster:
    log: JetStreamLog
    observer: Projection
    client: Writer
    nodes: dict[str, SimNode] = field(default_factory=dict)
    loops: list[asyncio.Task[None]] = field(default_factory=list)
    events: list[Envelope] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    one_per_slot: bool = True

    @property
    def state(self) -> ClusterState:
        return self.observer.state

    # -- driving -------------------------------------------------------------------------------

    async def append(self, *events: AnyEvent) -> None:
        """What the API would do: append, then read its own write."""
        results = await self.client.append([Intent(ev) for ev in events], self.state)
        await self.observer.wait_for(max(r for r in results if isinstance(r, int)))

    async def start_agent(self, node_id: str) -> None:
        """Start (or restart) the agent of `node_id`; a new node joins the cluster."""
        node = self.nodes.get(node_id)
        if node is None:
            resources = NodeResources(nano_cpus=4_000_000_000, memory_bytes=8 << 30)
            identity = Identity(node_id=node_id, spec=NodeSpec(), addr="127.0.0.1",
                                description=NodeDescription(hostname=node_id, resources=resources))
            node = self.nodes[node_id] = SimNode(identity)
        assert node.running is None, f"{node_id} already runs"
        agent = Agent(self.log, self.log.nc.publish, [node.identity],
                      SimExecutor(node.world, start_latency_s=SIM_START_S), heartbeat_s=HEARTBEAT_S, token=TOKEN)
        node.running = asyncio.create_task(agent.run())
        await self.until(f"{node_id} ready", lambda: (n := self.state.nodes.get(node_id)) is not None
                         and n.status.state == "ready")

    async def stop_agent(self, node_id: str) -> None:
        """The node falls silent: no heartbeats, no reports. Its simulated tasks keep running."""
        node = self.nodes[node_id]
        assert node.running is not None
        node.running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await node.running
        node.running = None

    def fail(self, task_id: str, exit_code: int = 1) -> None:
        """The task's simulated process exits by itself, as a crash would."""
        task = self.state.tasks[task_id]
        world = self.nodes[task.node_id].world
        world.exit_by_itself(world.tasks[task_id], exit_code)

    # -- reading -------------------------------------------------------------------------------

    async def until(self, what: str, check: Callable[[], bool], within_s: float = 30,
                    watch: Callable[[], None] | None = None) -> None:
        """Wait for the log to make `check` true (re-checked on every entry, and every 50 ms for
        conditions that only time makes true); `watch` sees the state after every entry meanwhile."""
        listener = (lambda seq, env: watch()) if watch is not None else None
        if listener is not None:
            self.observer.listeners.append(listener)
        deadline = time.monotonic() + within_s
        try:
            while not check():
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out waiting for {what}: {self.describe()}")
                self.observer.updated.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.observer.updated.wait(), 0.05)
        finally:
            if listener is not None:
                self.observer.listeners.remove(listener)
        assert not self.violations, self.violations

    def tasks(self, service_id: str) -> list[Task]:
        return sorted(self.state.tasks_of_service(service_id), key=lambda t: (t.slot, t.node_id, t.created_at))

    def running(self, service_id: str) -> list[Task]:
        """Tasks that run and are wanted running."""
        return [t for t in self.tasks(service_id)
                if t.status.state == TaskState.RUNNING and t.desired_state == TaskState.RUNNING]

    def of(self, kind: type[E]) -> list[tuple[Envelope, E]]:
        """Every event of one kind the log holds, in log order, with its envelope."""
        return [(env, env.event) for env in self.events if isinstance(env.event, kind)]

    def update_states(self, service_id: str) -> list[tuple[str, str]]:
        """Each UpdateStatus the service went through, as (state, message), replayed from the log."""
        replay = ClusterState()
        seen: list[tuple[str, str]] = []
        for seq, env in enumerate(self.events, start=1):
            apply(replay, seq, env)
            status = replay.services[service_id].update_status if service_id in replay.services else None
            now = ("", "") if status is None else (status.state, status.message)
            if not seen or seen[-1] != now:
                seen.append(now)
        return [s for s in seen if s != ("", "")]

    def describe(self) -> str:
        return "; ".join(f"{t.service_name}.{t.slot or t.node_id} {t.id[:6]} {t.node_id or '-'} "
                         f"{t.status.state}/{t.desired_state}" for t in
                         sorted(self.state.tasks.values(), key=lambda t: (t.service_name, t.slot, t.created_at)))

    def _record(self, seq: int, env: msgspec.Struct) -> None:
        if not isinstance(env, Envelope):
            return
        self.events.append(env)
        if not self.one_per_slot:
            return
        wanted = Counter((t.service_id, t.slot, "" if t.slot else t.node_id) for t in self.state.tasks.values()
                         if t.desired_state == TaskState.RUNNING)
        self.violations += [f"seq {seq}: slot {k} has {n} tasks wanted running" for k, n in wanted.items() if n > 1]


@contextlib.asynccontextmanager
async def sim_cluster(log: JetStreamLog, *nodes: str, settings: Settings | None = None,
                      one_per_slot: bool = True) -> AsyncIterator[SimCluster]:
    """The control plane, and an agent for each of `nodes` (more can join later)."""
    observer = Projection(log)
    c = SimCluster(log, observer, Writer(log, "test"), one_per_slot=one_per_slot)
    observer.listeners.append(c._record)
    await observer.start()
    await c.append(ClusterCreated(cluster_id="sim", worker_token=TOKEN))
    liveness = Liveness(time.time_ns(), grace_s=GRACE_S)
    loops: list[Reconciler] = []
    for make in (lambda p, w: orchestrator.reconciler(p, w, Orchestrator(settings or Settings()), liveness),
                 scheduler.reconciler):
        projection = Projection(log, track_changes=True)
        await projection.start()
        loop: Reconciler = make(projection, Writer(log, "control"))
        loops.append(loop)
        c.loops.append(asyncio.create_task(loop.run()))
    sub = await log.nc.subscribe(HEARTBEATS_SUBJECT, cb=orchestrator.listen(liveness, loops[0]))
    try:
        for node_id in nodes:
            await c.start_agent(node_id)
        yield c
    finally:
        await sub.unsubscribe()
        for node_id, node in c.nodes.items():
            if node.running is not None:
                await c.stop_agent(node_id)
        for task in c.loops:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for loop in loops:
            await loop.projection.stop()
        await observer.stop()
