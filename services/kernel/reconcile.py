"""The decide-append loop that every deciding process (orchestrator, scheduler) runs.

A pure `decide` proposes events from the projection; this shell appends them as one pipelined batch,
then waits until its own projection has applied them before deciding again. Deciding twice on a view
that misses one's own writes is how duplicate tasks are born, so the wait is never skipped.

Work is proportional to what changed: the fold marks the services and nodes each event touched, and
a pass decides for those only. (A reader may keep tasks moving forward apart,
`ClusterState.progressed_services`: they still run a pass, and its decide chooses which to decide.)
The first pass, after the projection has caught up, covers everything so whatever a previous leader
missed is done now.

A pass never holds the event loop for long: it decides its services in chunks of about `CHUNK_TASKS`
tasks or `CHUNK_SERVICES` services (a new service has no tasks yet, but deciding it creates them all),
each chunk decided on one view, appended, and waited for like a pass of its own, so the
projection folds, the lease keeper sees a live loop and the connection is read between them. (A
first pass over 100,000 tasks, decided at once, held the orchestrator's loop for over 10 s on a
starved core, long enough for it to give up its lease.) Deciding for a subset of the services is
what every incremental pass does already; the touched nodes go with the first chunk, so the
scheduler's per-node tallies are current before it places anything.

Each pass continues the traces of the events that caused it (`traces.py`): the intents it appends
carry a `traceparent` whose parent is the event they react to, so one request is one trace across
every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from services.kernel.eventlog import AppendResult, Conflict, LogUnavailable
from services.kernel.metrics import RECONCILE_SECONDS
from services.kernel.projection import Projection
from services.kernel.state import ClusterState
from services.kernel.traces import Continuations, TraceIndex
from services.kernel.writer import Intent, Writer

log = logging.getLogger(__name__)

CHUNK_TASKS = 2000
"""Tasks (of the services decided) per chunk of a pass: ~0.1 s of deciding on a loaded core."""
CHUNK_SERVICES = 20
"""Services per chunk at most: 20 new services of 100 replicas are 2,000 tasks to create."""


@dataclass(frozen=True, slots=True, order=True)
class Timer:
    """Decide again at `at_ns` (wall clock) for this service and/or node even if nothing else changes:
    restart delays and heartbeat deadlines are the passage of time, which no event announces."""

    at_ns: int
    service_id: str = ""
    node_id: str = ""


@dataclass(slots=True)
class Decision:
    intents: list[Intent] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)

    def extend(self, other: Decision) -> None:
        self.intents.extend(other.intents)
        self.timers.extend(other.timers)


Decide = Callable[[ClusterState, set[str], set[str], int], Decision]
"""`decide(state, touched_services, touched_nodes, now_ns)`: pure, no I/O, never raises on odd state."""

AfterAppend = Callable[[Sequence[Intent], Sequence[AppendResult]], None]
"""Called with what a pass appended and how each append ended, for metrics."""


def combine(*deciders: Decide) -> Decide:
    """One `Decide` out of several independent concerns; each sees the same view and touched sets."""

    def decide(state: ClusterState, services: set[str], nodes: set[str], now_ns: int) -> Decision:
        out = Decision()
        for d in deciders:
            out.extend(d(state, services, nodes, now_ns))
        return out

    return decide


class Reconciler:
    """Runs `decide` whenever the projection changes, a timer falls due, or someone pokes it."""

    def __init__(
        self,
        name: str,
        projection: Projection,
        writer: Writer,
        decide: Decide,
        *,
        clock: Callable[[], int] = time.time_ns,
        after_append: AfterAppend | None = None,
        gather_s: float = 0.05,
        settle_warn_s: float = 5.0,
        retry_s: float = 0.5,
        chunk_tasks: int = CHUNK_TASKS,
        chunk_services: int = CHUNK_SERVICES,
    ) -> None:
        self.name = name
        self.projection = projection
        self.writer = writer
        self.decide = decide
        self.clock = clock
        self.after_append = after_append
        self.gather_s = gather_s
        """How long a woken pass may wait for entries already in the log, so one pass sees a whole burst."""
        self.settle_warn_s = settle_warn_s
        self.retry_s = retry_s
        self.chunk_tasks = chunk_tasks
        self.chunk_services = chunk_services
        self._timers: list[Timer] = []
        self._armed: set[Timer] = set()
        if projection.traces is None:
            projection.traces = TraceIndex()

    def poke(self, service_id: str = "", node_id: str = "") -> None:
        """Something outside the log changed (e.g. a heartbeat): decide for it on the next pass."""
        self.projection.state.touch(service_id=service_id, node_id=node_id)
        self.projection.updated.set()

    async def lead(self, writer: Writer) -> None:
        """Run as a leader for one term, appending through that term's fenced writer."""
        self.writer = writer
        try:
            await self.run()
        finally:
            state = self.projection.state
            state.touched_tasks = state.progressed_services = None  # a standby keeps none for a decide it does not run

    async def run(self) -> None:
        """Full pass, then one pass per change, forever. Call after `projection.start()` returned.
        The full pass starts from the whole view: what was touched before it is dropped, touched tasks
        too, so a decide that keeps tallies of its own (the scheduler's) rebuilds them from the
        state rather than trusting what a term that ended mid-append left in them."""
        state = self.projection.state
        state.take_touched()
        state.touched_tasks = state.progressed_services = None
        await self._pass(set(state.services) | set(state.tasks_by_service), set(state.nodes) | set(state.tasks_by_node))
        while True:
            await self._wait()
            services, nodes = self.projection.state.take_touched()
            if self._take_due(services, nodes) or services or nodes or self.projection.state.progressed_services:
                await self._pass(services, nodes)

    async def _wait(self) -> None:
        """Until something changed or a timer is due. (`asyncio.timeout`, not `wait_for`: on 3.11
        `wait_for` can swallow a cancellation that races with its result, and the loop never stops.)"""
        updated = self.projection.updated
        updated.clear()
        state = self.projection.state
        if state.touched_services or state.touched_nodes or state.progressed_services:
            return  # changed during the last pass, or re-touched after a conflict or an unavailable log
        timeout = max(0.0, (self._timers[0].at_ns - self.clock()) / 1e9) if self._timers else None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await updated.wait()
        await self._gather()

    async def _gather(self) -> None:
        """While the log already holds more entries for us, let them in (bounded) before deciding."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.gather_s
        while self.projection.pending > 0 and (left := deadline - loop.time()) > 0:
            self.projection.updated.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self.projection.updated.wait()

    def _take_due(self, services: set[str], nodes: set[str]) -> bool:
        now = self.clock()
        due = False
        while self._timers and self._timers[0].at_ns <= now:
            timer = heapq.heappop(self._timers)
            self._armed.discard(timer)
            due = True
            if timer.service_id:
                services.add(timer.service_id)
            if timer.node_id:
                nodes.add(timer.node_id)
        return due

    async def _pass(self, services: set[str], nodes: set[str]) -> None:
        """Chunk by chunk; between chunks the loop runs everything else that is ready (a chunk that
        appended has already waited for its writes to be folded, which yields too)."""
        for n, chunk in enumerate(chunks(self.projection.state, services, self.chunk_tasks, self.chunk_services)):
            if n:
                await asyncio.sleep(0)
            await self._decide(chunk, nodes if n == 0 else set())

    async def _decide(self, services: set[str], nodes: set[str]) -> None:
        started = time.perf_counter()
        spans = Continuations(f"{self.name} decide", self.projection.traces, time.time_ns())
        state = self.projection.state
        decision = self.decide(state, services, nodes, self.clock())
        for timer in decision.timers:
            if timer not in self._armed:
                self._armed.add(timer)
                heapq.heappush(self._timers, timer)
        try:
            if decision.intents:
                await self._append(decision.intents, state, spans)
        finally:
            spans.end()
        RECONCILE_SECONDS.labels(loop=self.name).observe(time.perf_counter() - started)

    async def _append(self, intents: list[Intent], state: ClusterState, spans: Continuations) -> None:
        contexts = [spans.context_for(i.event, state.tasks) for i in intents]
        try:
            results = await self.writer.append(intents, state, contexts)
        except LogUnavailable as e:
            spans.end(error=str(e))
            log.warning("log unavailable, will decide again", extra={"loop": self.name, "error": str(e)})
            for intent in intents:
                retouch(intent, state)
            await asyncio.sleep(self.retry_s)
            await self._catch_up()
            return
        if self.after_append is not None:
            self.after_append(intents, results)
        target, conflicts = 0, 0
        for intent, result in zip(intents, results, strict=True):
            if isinstance(result, Conflict):
                conflicts += 1
                retouch(intent, state)
                target = max(target, result.last_seq)
            else:
                target = max(target, result)
        log.debug("appended", extra={"loop": self.name, "events": len(intents), "conflicts": conflicts})
        if conflicts:
            log.info("stale view, deciding again", extra={"loop": self.name, "conflicts": conflicts})
        await self._settle(target)

    async def _catch_up(self) -> None:
        """After an append whose fate is unknown, decide again only on a view that holds it if it was
        stored: on the log's end, once the log answers (a blind retry would create tasks twice)."""
        while True:
            try:
                end = await self.projection.log.last_seq()
            except LogUnavailable:
                await asyncio.sleep(self.retry_s)
                continue
            await self._settle(end)
            return

    async def _settle(self, seq: int) -> None:
        """Read-your-writes. No time-out: deciding on a view without our own writes is worse than waiting."""
        while True:
            try:
                async with asyncio.timeout(self.settle_warn_s):
                    await self.projection.wait_for(seq)
                return
            except TimeoutError:
                log.warning("projection has not applied our own writes yet",
                            extra={"loop": self.name, "seq": seq, "applied": self.projection.state.seq})


def chunks(state: ClusterState, services: set[str], tasks: int, most: int) -> list[set[str]]:
    """`services` (sorted, so passes are repeatable) cut into sets of about `tasks` tasks and at most
    `most` services each; one chunk at least, so a pass for nodes alone still decides."""
    out: list[set[str]] = [set()]
    weight = 0
    for service_id in sorted(services):
        if weight >= tasks or len(out[-1]) >= most:
            out.append(set())
            weight = 0
        out[-1].add(service_id)
        weight += len(state.tasks_by_service.get(service_id, ()))
    return out


def retouch(intent: Intent, state: ClusterState) -> None:
    """Mark what a refused intent was about, so the next pass decides it again on a fresher view
    (a refused assignment's task on the node it was meant for, so the scheduler's tally of that node
    lets go of it)."""
    ev = intent.event
    service_id: str = getattr(ev, "service_id", "")
    node_id: str = getattr(ev, "node_id", "")
    embedded = getattr(ev, "task", None)
    task = embedded if embedded is not None else state.tasks.get(getattr(ev, "task_id", ""))
    task_id = ""
    if task is not None:
        service_id = service_id or task.service_id
        node_id = node_id or task.node_id
        task_id = task.id
    state.touch(service_id, node_id, task_id)
