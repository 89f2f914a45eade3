"""A control plane (orchestrator and scheduler decide-append loops) and `sim` agents, in one process on
a real nats-server: what the orchestration integration tests drive by appending events as the API would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field

from schemas.events import AnyEvent
from schemas.node import NodeDescription, NodeResources, NodeSpec
from schemas.task import Task
from services.agent.agent import Agent
from services.agent.executors.sim import SimExecutor
from services.agent.identity import Identity
from services.kernel.jetstream import JetStreamLog
from services.kernel.projection import Projection
from services.kernel.reconcile import Reconciler
from services.kernel.state import ClusterState
from services.kernel.writer import Intent, Writer
from services.orchestrator import service as orchestrator
from services.orchestrator.decide import Settings
from services.scheduler import service as scheduler


def identity(node_id: str) -> Identity:
    return Identity(node_id=node_id, spec=NodeSpec(), addr="127.0.0.1",
                    description=NodeDescription(hostname=node_id, resources=NodeResources(
                        nano_cpus=4_000_000_000, memory_bytes=8 << 30)))


@dataclass
class SimCluster:
    log: JetStreamLog
    observer: Projection
    client: Writer
    running: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def state(self) -> ClusterState:
        return self.observer.state

    def spawn(self, run: Coroutine[None, None, None]) -> None:
        self.running.append(asyncio.create_task(run))

    async def loop(self, make: Callable[[Projection, Writer], Reconciler], name: str) -> None:
        projection = Projection(self.log, track_changes=True)
        await projection.start()
        self.spawn(make(projection, Writer(self.log, name)).run())

    async def agent(self, *node_ids: str) -> None:
        """A `sim` agent process hosting these nodes: it joins them, heartbeats and runs their tasks."""
        agent = Agent(self.log, self.log.nc.publish, [identity(n) for n in node_ids], SimExecutor(),
                      heartbeat_s=0.2)
        self.spawn(agent.run())

    async def append(self, *events: AnyEvent) -> None:
        results = await self.client.append([Intent(ev) for ev in events], self.state)
        await self.observer.wait_for(max(r for r in results if isinstance(r, int)))

    async def until(self, what: str, check: Callable[[], bool], within_s: float = 30,
                    watch: Callable[[], None] | None = None) -> None:
        """Wait for `check` on the observer's view, calling `watch` after every applied entry."""
        listener = (lambda seq, env: watch()) if watch is not None else None
        if listener is not None:
            self.observer.listeners.append(listener)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        try:
            while not check():
                left = deadline - loop.time()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}: {self.describe()}")
                self.observer.updated.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, 0.2)):
                        await self.observer.updated.wait()
        finally:
            if listener is not None:
                self.observer.listeners.remove(listener)

    def tasks(self, service_id: str) -> list[Task]:
        return self.state.tasks_of_service(service_id)

    def describe(self) -> str:
        return "; ".join(f"{t.service_name}.{t.slot} {t.node_id or '-'} {t.status.state}/{t.desired_state}"
                         for t in sorted(self.state.tasks.values(), key=lambda t: (t.slot, t.created_at)))


@contextlib.asynccontextmanager
async def sim_cluster(log: JetStreamLog, settings: Settings | None = None) -> AsyncIterator[SimCluster]:
    """Orchestrator and scheduler running; add agents with `await c.agent(...)`."""
    observer = Projection(log)
    await observer.start()
    c = SimCluster(log, observer, Writer(log, "test"))
    try:
        await c.loop(lambda p, w: orchestrator.reconciler(p, w, settings or Settings()), "orchestrator")
        await c.loop(lambda p, w: scheduler.reconciler(p, w), "scheduler")
        yield c
    finally:
        for task in c.running:
            task.cancel()
        for task in c.running:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await observer.stop()
