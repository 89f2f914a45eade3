"""A control plane (orchestrator and scheduler decide-append loops) and `sim` agents, in one process on
a real nats-server: what the orchestration integration tests drive by appending events as the API would."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field

from nats.aio.subscription import Subscription

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
from services.orchestrator.liveness import HEARTBEATS_SUBJECT, Liveness
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

    def spawn(self, run: Coroutine[None, None, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(run)
        self.running.append(task)
        return task

    async def loop(self, make: Callable[[Projection, Writer], Reconciler], name: str) -> Reconciler:
        projection = Projection(self.log, track_changes=True)
        await projection.start()
        loop = make(projection, Writer(self.log, name))
        self.spawn(loop.run())
        return loop

    async def agent(self, *node_ids: str) -> asyncio.Task[None]:
        """A `sim` agent process hosting these nodes: it joins them, heartbeats and runs their tasks.
        Cancel the returned task to take the agent away (its tasks stay as the log last saw them)."""
        agent = Agent(self.log, self.log.nc.publish, [identity(n) for n in node_ids], SimExecutor(),
                      heartbeat_s=0.1)
        return self.spawn(agent.run())

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
async def sim_cluster(log: JetStreamLog, settings: Settings | None = None,
                      heartbeat_grace_s: float | None = None) -> AsyncIterator[SimCluster]:
    """Orchestrator and scheduler running; add agents with `await c.agent(...)`. With a heartbeat
    grace the orchestrator also listens to heartbeats and marks silent nodes down."""
    observer = Projection(log)
    await observer.start()
    c = SimCluster(log, observer, Writer(log, "test"))
    liveness = Liveness(time.time_ns(), heartbeat_grace_s) if heartbeat_grace_s is not None else None
    try:
        loop = await c.loop(lambda p, w: orchestrator.reconciler(p, w, settings or Settings(), liveness),
                            "orchestrator")
        if liveness is not None:
            sub = await log.nc.subscribe(HEARTBEATS_SUBJECT, cb=orchestrator.listen(liveness, loop))
            c.spawn(_unsubscribe_on_cancel(sub))
        await c.loop(lambda p, w: scheduler.reconciler(p, w), "scheduler")
        yield c
    finally:
        for task in c.running:
            task.cancel()
        for task in c.running:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await observer.stop()


async def _unsubscribe_on_cancel(sub: Subscription) -> None:
    try:
        await asyncio.Future()
    finally:
        await sub.unsubscribe()
