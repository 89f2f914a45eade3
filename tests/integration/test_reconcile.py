"""The real decide-append loops (orchestrator and scheduler, each with its own projection) against the
in-memory log and a real nats-server alike, with a fake agent that reports what it is told to do.

The cluster is driven only by appending events, as the API would; every check reads a separate
observer projection, as a client would, and at no point may a slot have two tasks wanted running.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import msgspec
import pytest

from schemas.events import (
    AnyEvent,
    NodeJoined,
    ServiceCreated,
    ServiceRemoved,
    ServiceUpdated,
    TaskStatusChanged,
)
from schemas.heartbeat import Heartbeat
from schemas.node import NodeDescription, NodeResources, NodeSpec
from schemas.service import (
    ContainerSpec,
    ReplicatedService,
    ResourceReservations,
    Resources,
    RestartPolicy,
    ServiceMode,
    ServiceSpec,
    TaskSpec,
    UpdateConfig,
)
from schemas.task import RANK, Task, TaskState, TaskStatus
from services.kernel import subjects
from services.kernel.eventlog import AppendResult, EventLog
from services.kernel.jetstream import JetStreamLog
from services.kernel.projection import Projection
from services.kernel.reconcile import Decision, Reconciler
from services.kernel.state import ClusterState
from services.kernel.writer import Intent, Writer
from services.orchestrator import service as orchestrator
from services.orchestrator.decide import Orchestrator, Settings
from services.orchestrator.liveness import HEARTBEATS_SUBJECT, Liveness
from services.scheduler import service as scheduler

GIB = 1 << 30
QUICK = RestartPolicy(delay=100_000_000)  # 0.1 s, so restarts are seen without a 5 s wait


def fake_agent(state: ClusterState, services: set[str], nodes: set[str], now_ns: int) -> Decision:
    """Every agent at once: run what is assigned and wanted running, stop what is wanted stopped."""
    out = Decision()
    for task in state.tasks.values():
        if not task.node_id or RANK[task.status.state] > RANK[TaskState.RUNNING]:
            continue
        if task.desired_state == TaskState.RUNNING and task.status.state != TaskState.RUNNING:
            out.intents.append(_report(task, TaskState.FAILED if _image(task).startswith("bad") else TaskState.RUNNING))
        elif RANK[task.desired_state] > RANK[TaskState.RUNNING]:
            out.intents.append(_report(task, TaskState.SHUTDOWN))
    return out


def _image(task: Task) -> str:
    return task.spec.container_spec.image if task.spec.container_spec else ""


def _report(task: Task, state: TaskState) -> Intent:
    return Intent(TaskStatusChanged(task_id=task.id, status=TaskStatus(state=state)),
                  expect_seq=task.version.index, expect_subject=subjects.task_all(task.node_id, task.id))


@dataclass
class Cluster:
    log: EventLog
    observer: Projection
    client: Writer
    loops: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    slot_violations: list[str] = field(default_factory=list)

    @property
    def state(self) -> ClusterState:
        return self.observer.state

    async def start(self, name: str, make: Callable[[Projection, Writer], Reconciler]) -> Reconciler:
        projection = Projection(self.log, track_changes=True)
        await projection.start()
        loop = make(projection, Writer(self.log, name))
        self.loops[name] = asyncio.create_task(loop.run())
        return loop

    async def stop(self, name: str) -> None:
        task = self.loops.pop(name)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def append(self, *events: AnyEvent) -> None:
        results = await self.client.append([Intent(ev) for ev in events], self.state)
        await self.observer.wait_for(max(r for r in results if isinstance(r, int)))

    async def until(self, what: str, check: Callable[[], bool], within_s: float = 10) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while not check():
            self._check_slots()
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.describe()}")
            await asyncio.sleep(0.01)
        self._check_slots()
        assert not self.slot_violations, self.slot_violations

    def _check_slots(self) -> None:
        wanted = Counter((t.service_id, t.slot) for t in self.state.tasks.values()
                         if t.desired_state == TaskState.RUNNING and t.slot)
        self.slot_violations += [f"slot {k} has {n} tasks wanted running" for k, n in wanted.items() if n > 1]

    def running(self, service_id: str = "web") -> list[Task]:
        return [t for t in self.state.tasks_of_service(service_id)
                if t.status.state == TaskState.RUNNING and t.desired_state == TaskState.RUNNING]

    def running_slots(self, service_id: str = "web") -> list[int]:
        return sorted(t.slot for t in self.running(service_id))

    def describe(self) -> str:
        return "; ".join(f"{t.service_name}.{t.slot} {t.node_id or '-'} {t.status.state}/{t.desired_state}"
                         f"{' ' + t.status.err if t.status.err else ''}"
                         for t in sorted(self.state.tasks.values(), key=lambda t: (t.slot, t.created_at)))


@contextlib.asynccontextmanager
async def running_cluster(eventlog: EventLog) -> AsyncIterator[Cluster]:
    observer = Projection(eventlog)
    await observer.start()
    c = Cluster(eventlog, observer, Writer(eventlog, "test"))
    try:
        yield c
    finally:
        for name in list(c.loops):
            await c.stop(name)
        await observer.stop()


@pytest.fixture
async def cluster(eventlog: EventLog) -> AsyncIterator[Cluster]:
    async with running_cluster(eventlog) as c:
        yield c


def node(node_id: str, memory: int = 8 * GIB) -> NodeJoined:
    return NodeJoined(node_id=node_id, spec=NodeSpec(), addr="127.0.0.1",
                      description=NodeDescription(hostname=node_id, resources=NodeResources(nano_cpus=4_000_000_000,
                                                                                            memory_bytes=memory)))


def web(replicas: int, memory: int = 0, image: str = "nginx", update: UpdateConfig | None = None) -> ServiceSpec:
    resources = Resources(reservations=ResourceReservations(memory_bytes=memory)) if memory else None
    return ServiceSpec(name="web", mode=ServiceMode(replicated=ReplicatedService(replicas=replicas)),
                       task_template=TaskSpec(container_spec=ContainerSpec(image=image), restart_policy=QUICK,
                                              resources=resources), update_config=update, rollback_config=update)


async def start_control_plane(c: Cluster, liveness: Liveness | None = None) -> None:
    await c.start("orchestrator", lambda p, w: orchestrator.reconciler(p, w, Orchestrator(Settings()), liveness))
    await c.start("scheduler", lambda p, w: scheduler.reconciler(p, w))
    await c.start("agent", lambda p, w: Reconciler("agent", p, w, fake_agent))


async def test_a_service_runs_is_repaired_scales_and_goes(cluster: Cluster) -> None:
    c = cluster
    await start_control_plane(c)
    await c.append(node("n1"), node("n2"), ServiceCreated(service_id="web", spec=web(3)))
    await c.until("3 running", lambda: c.running_slots() == [1, 2, 3])
    assert Counter(t.node_id for t in c.running()) in (Counter(n1=2, n2=1), Counter(n1=1, n2=2))

    victim = next(t for t in c.running() if t.slot == 2)
    await c.append(TaskStatusChanged(task_id=victim.id, status=TaskStatus(state=TaskState.FAILED, err="exit 1")))
    await c.until("the failure replaced", lambda: c.running_slots() == [1, 2, 3] and victim.id not in
                  {t.id for t in c.running()})
    assert c.state.tasks[victim.id].desired_state == TaskState.SHUTDOWN

    await c.append(ServiceUpdated(service_id="web", spec=web(5)))
    await c.until("5 running", lambda: c.running_slots() == [1, 2, 3, 4, 5])

    await c.append(ServiceUpdated(service_id="web", spec=web(0)))
    await c.until("no tasks left", lambda: not c.state.tasks_of_service("web"))

    await c.append(ServiceUpdated(service_id="web", spec=web(2)))
    await c.until("2 running again", lambda: c.running_slots() == [1, 2])
    await c.append(ServiceRemoved(service_id="web"))
    await c.until("removed with its tasks", lambda: not c.state.tasks)


async def test_a_rolling_update_two_at_a_time_completes_and_a_failing_one_rolls_back(cluster: Cluster) -> None:
    c = cluster
    await start_control_plane(c)
    config = UpdateConfig(parallelism=2, monitor=200_000_000, failure_action="rollback")
    await c.append(node("n1"), node("n2"), ServiceCreated(service_id="web", spec=web(10, update=config)))
    await c.until("10 running", lambda: len(c.running()) == 10)

    await c.append(ServiceUpdated(service_id="web", spec=web(10, image="nginx:2", update=config)))
    most = 0

    def updated() -> bool:
        nonlocal most
        most = max(most, len({t.slot for t in c.state.tasks_of_service("web")
                              if _image(t) == "nginx:2" and t.status.state != TaskState.RUNNING
                              and RANK[t.desired_state] <= RANK[TaskState.RUNNING]}))
        status = c.state.services["web"].update_status
        return status is not None and status.state == "completed"

    await c.until("the update completed", updated)
    assert {_image(t) for t in c.running()} == {"nginx:2"} and len(c.running()) == 10
    assert most <= 2

    await c.append(ServiceUpdated(service_id="web", spec=web(10, image="bad:1", update=config)))
    await c.until("rolled back", lambda: (s := c.state.services["web"].update_status) is not None
                  and s.state == "rollback_completed")
    assert {_image(t) for t in c.running()} == {"nginx:2"} and len(c.running()) == 10


async def test_a_restarted_orchestrator_converges_without_duplicates(cluster: Cluster) -> None:
    c = cluster
    await start_control_plane(c)
    await c.append(node("n1"), ServiceCreated(service_id="web", spec=web(2)))
    await c.until("2 running", lambda: c.running_slots() == [1, 2])
    await c.stop("orchestrator")
    await c.append(ServiceUpdated(service_id="web", spec=web(4)))
    await asyncio.sleep(0.1)
    assert c.running_slots() == [1, 2]
    await c.start("orchestrator", lambda p, w: orchestrator.reconciler(p, w, Orchestrator(Settings())))
    await c.until("4 running", lambda: c.running_slots() == [1, 2, 3, 4])
    await asyncio.sleep(0.2)
    assert len(c.state.tasks) == 4


@dataclass
class _Recorded:
    """What a chunked loop did: the services each call of `decide` covered, whether each call's view
    held every write appended before it, and how many calls had been made whenever another coroutine ran."""

    calls: list[set[str]] = field(default_factory=list)
    saw_own_writes: list[bool] = field(default_factory=list)
    ticks: set[int] = field(default_factory=set)
    written: int = 0

    def loop(self, projection: Projection, writer: Writer, chunk_tasks: int, chunk_services: int) -> Reconciler:
        inner = orchestrator.reconciler(projection, writer, Orchestrator(Settings()))

        def decide(state: ClusterState, services: set[str], nodes: set[str], now_ns: int) -> Decision:
            self.calls.append(set(services))
            self.saw_own_writes.append(state.seq >= self.written)
            return inner.decide(state, services, nodes, now_ns)

        def appended(intents: Sequence[Intent], results: Sequence[AppendResult]) -> None:
            self.written = max([self.written, *(r for r in results if isinstance(r, int))])

        return Reconciler("orchestrator", projection, writer, decide, after_append=appended,
                          chunk_tasks=chunk_tasks, chunk_services=chunk_services)

    async def tick(self) -> None:
        while True:
            self.ticks.add(len(self.calls))
            await asyncio.sleep(0)


async def test_a_pass_over_many_services_is_decided_in_chunks_that_let_other_work_run(cluster: Cluster) -> None:
    """A new leader's first pass covers every service. Decided at once it held the orchestrator's loop
    for over 10 s at 100,000 tasks, and the lease keeper let the lease go; in chunks, other coroutines
    run between them, each chunk decides on a view holding the previous chunk's writes, and no task
    is created twice."""
    c = cluster
    services = [f"s{i:02}" for i in range(20)]
    await c.append(node("n1"), *(ServiceCreated(service_id=s, spec=msgspec.structs.replace(web(10), name=s))
                                 for s in services))
    # new services: 5 per chunk by count; then by their tasks, 10 each (a chunk closes at 40 or more)
    for chunk_tasks, chunk_services, chunks in ((2000, 5, 4), (40, 20, 5)):
        rec = _Recorded()
        ticker = asyncio.create_task(rec.tick())
        try:
            await c.start("orchestrator", functools.partial(rec.loop, chunk_tasks=chunk_tasks,
                                                            chunk_services=chunk_services))
            await c.until("every replica created", lambda: len(c.state.tasks) == 200)
            await asyncio.sleep(0.2)
        finally:
            ticker.cancel()
            await c.stop("orchestrator")
        first_pass = rec.calls[:chunks]
        assert sorted(s for chunk in first_pass for s in chunk) == services
        assert [len(chunk) for chunk in first_pass] == [20 // chunks] * chunks
        assert set(range(1, chunks)) <= rec.ticks, "nothing else ran between the chunks"
        assert all(rec.saw_own_writes), rec.saw_own_writes
        assert len(c.state.tasks) == 200
        assert Counter(t.service_id for t in c.state.tasks.values()) == dict.fromkeys(services, 10)


async def test_a_term_starts_from_the_whole_view_not_from_changes_kept_before_it(cluster: Cluster) -> None:
    """The scheduler's tallies follow `touched_tasks` between passes; a term that ended mid-append
    never retouched what it had taken, so the next term's first pass must re-tally every node."""
    c = cluster
    await c.append(node("n1"))
    seen: list[dict[str, str] | None] = []

    def decide(state: ClusterState, services: set[str], nodes: set[str], now_ns: int) -> Decision:
        seen.append(state.touched_tasks)
        state.touched_tasks = {}
        return Decision()

    loop = await c.start("scheduler", lambda p, w: Reconciler("scheduler", p, w, decide))
    await c.until("a first pass", lambda: len(seen) == 1)
    loop.projection.state.touched_tasks = {"stale": "n1"}
    await c.stop("scheduler")
    c.loops["scheduler"] = asyncio.create_task(loop.lead(loop.writer))
    await c.until("a second term's first pass", lambda: len(seen) == 2)
    assert seen == [None, None]


async def test_a_task_too_big_for_every_node_waits_until_one_joins(cluster: Cluster) -> None:
    c = cluster
    await start_control_plane(c)
    await c.append(node("small", memory=GIB), ServiceCreated(service_id="web", spec=web(1, memory=500 * GIB)))
    await c.until("pending with the reason", lambda: [t.status.err for t in c.state.tasks.values()] == [
        "no suitable node (insufficient resources on 1 node)"])
    await c.append(node("big", memory=512 * GIB))
    await c.until("placed on the big node", lambda: [t.node_id for t in c.running()] == ["big"])


async def test_silent_nodes_go_down_their_tasks_move_and_they_come_back(jslog: JetStreamLog) -> None:
    """Heartbeats over core NATS: n2 falls silent, is marked down and its task moves to n1; once it
    speaks again it is ready again (and gets nothing back: Swarm never rebalances)."""
    liveness = Liveness(time.time_ns(), grace_s=0.5)
    async with running_cluster(jslog) as c:
        await c.append(node("n1"), node("n2"), ServiceCreated(service_id="web", spec=web(2)))
        loop = await c.start("orchestrator",
                             lambda p, w: orchestrator.reconciler(p, w, Orchestrator(Settings()), liveness))
        await c.start("scheduler", lambda p, w: scheduler.reconciler(p, w))
        await c.start("agent", lambda p, w: Reconciler("agent", p, w, fake_agent))
        sub = await jslog.nc.subscribe(HEARTBEATS_SUBJECT, cb=orchestrator.listen(liveness, loop))
        try:
            async with heartbeats(jslog, "n1", "n2"):
                await c.until("one task per node", lambda: sorted(t.node_id for t in c.running()) == ["n1", "n2"])
            async with heartbeats(jslog, "n1"):
                await c.until("n2 down", lambda: c.state.nodes["n2"].status.state == "down")
                await c.until("both on n1", lambda: [t.node_id for t in c.running()] == ["n1", "n1"])
            async with heartbeats(jslog, "n1", "n2"):
                await c.until("n2 ready again", lambda: c.state.nodes["n2"].status.state == "ready")
        finally:
            await sub.unsubscribe()


@contextlib.asynccontextmanager
async def heartbeats(log: JetStreamLog, *nodes: str, period: float = 0.1) -> AsyncIterator[None]:
    """One agent process hosting `nodes`, heartbeating while the block runs."""
    payload = msgspec.json.encode(Heartbeat(nodes=list(nodes), period=period))

    async def beat() -> None:
        while True:
            await log.nc.publish(subjects.heartbeat(nodes[0]), payload)
            await asyncio.sleep(period)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
