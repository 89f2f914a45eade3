"""Status reports: a task's newest transition becomes a `TaskStatusChanged`, appended in pipelined batches.

As swarmkit's agent status reporter does (`agent/reporter.go`), only the newest unsent report of a
task is kept: a transition reported while the task's previous report is still queued (not yet in
flight) replaces it in the queue. A task that goes accepted, preparing, ready, starting, running
while one batch is being appended costs one event, not five; the log shows the states the agent
reached when it could write, always the newest. The worker leads the projection with its own
status (`worker._Slot.status`), so it never waits for a replaced report, and the fold takes
forward jumps. A report already in flight is never replaced: the next one queues behind it. A
batch is sent `WINDOW_S` after its first report, so transitions within that window share it.

The agent is the only writer of a task's status leaf and the fold drops backwards reports, so no
compare-and-set is needed. A report's time is taken when it happens, so the event time is the
transition's time however long the log takes. It is sealed (id, actor, trace) when its batch is
taken to be sent, so a replaced report costs no encoding; a failed batch is re-sent as the same entries
(same `Nats-Msg-Id`), so a retry never stores a report twice. Reports still unsent when the agent
dies are not lost in any way that matters: the agent decides again from the log on restart and
reports whatever the log does not show yet.

Each report continues the trace of the newest entry about its task (the assignment, then the
agent's own previous report), so a request's trace reaches the container it started. A replaced
report keeps its span (the agent did reach that state), a sibling of the report that replaced it.
Where no span is recorded (no exporter: `tracing.recording`), a report starts none: its
`traceparent` is made as a string in the same trace (`traces.child_traceparent`), so log lines and
audit entries still correlate, for half of what a report cost with a span. (Where spans are
recorded, each report is sealed at once as its span's child.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from opentelemetry.context import Context

from schemas.events import TaskStatusChanged
from schemas.task import Task, TaskState, TaskStatus
from services.agent.metrics import REPORTS_REPLACED, observe_started
from services.kernel import tracing
from services.kernel.eventlog import Append, EventLog, LogUnavailable
from services.kernel.metrics import EVENTS_APPENDED
from services.kernel.projection import Projection
from services.kernel.state import ClusterState
from services.kernel.traces import TRACEPARENT, Continuations, TraceIndex, child_traceparent, context_of, remote_context
from services.kernel.writer import Intent, Writer

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 5.0
WINDOW_S = 0.1
"""How long a first report waits for others to join its batch, as swarmkit's dispatcher gathers task
status updates for up to 100 ms (`maxBatchInterval`). A task that starts within it (a quick
container, a sim task) costs one report, `running`, instead of `accepted` and then the rest: one
entry fewer for the server to store and every process to read."""


@dataclass(frozen=True, slots=True)
class _Unsealed:
    """A report not yet made an entry: where no span is recorded, a report is sealed only if it is
    still the task's newest when its batch is sent (most are replaced first), at its own time."""

    writer: Writer
    event: TaskStatusChanged
    time_ns: int


class Reporter:
    def __init__(self, eventlog: EventLog, projection: Projection, *, recording: bool | None = None,
                 window_s: float = WINDOW_S) -> None:
        self.log = eventlog
        self.window_s = window_s
        self.projection = projection
        """Names each report's subject: the task's node, from the agent's own view."""
        if projection.traces is None:
            projection.traces = TraceIndex()
        self.traces: TraceIndex = projection.traces
        self.recording = tracing.recording() if recording is None else recording
        """Each report is a span (default: as `tracing.setup` chose for this process)."""
        self._writers: dict[str, Writer] = {}
        self._queue: dict[str, Append | _Unsealed] = {}
        """The newest unsent report per task id, in the order tasks were first queued."""
        self._in_flight: list[Append] = []
        self._wake = asyncio.Event()

    def report(self, task: Task, status: TaskStatus) -> None:
        writer = self._writers.get(task.node_id)
        if writer is None:
            writer = self._writers[task.node_id] = Writer(self.log, actor=f"agent:{task.node_id}")
        event = TaskStatusChanged(task_id=task.id, status=status)
        queued = (_Unsealed(writer, event, time.time_ns()) if not self.recording
                  else self._traced(writer, event, self.projection.state))
        if task.id in self._queue:
            REPORTS_REPLACED.inc()
        self._queue[task.id] = queued  # the event's time is this, the newest, transition's
        if status.state is TaskState.RUNNING:
            observe_started(task)
        self._wake.set()

    def _seal(self, queued: Append | _Unsealed) -> Append:
        """The report under the trace of the newest entry about its task, its service or its node."""
        if isinstance(queued, Append):
            return queued
        state = self.projection.state
        parent = self.traces.traceparent_for(queued.event, state.tasks)
        return queued.writer.seal_with_headers(Intent(queued.event), state, {TRACEPARENT: child_traceparent(parent)},
                                               queued.time_ns)

    def _traced(self, writer: Writer, event: TaskStatusChanged, state: ClusterState) -> Append:
        """Sealed at once, as its span's child: a replaced report keeps its span."""
        span = Continuations(f"agent {event.status.state.value}", self.traces, time.time_ns())
        try:
            return writer.seal(Intent(event), state, span.context_for(event, state.tasks))
        finally:
            span.end()

    def trace_of(self, task: Task) -> Context | None:
        """The trace the task's newest entry belongs to, for the executor's work on it."""
        traceparent = self.traces.newest((task.id,))
        return context_of(traceparent) if self.recording else remote_context(traceparent)

    async def run(self) -> None:
        """Send whatever has queued up while the previous batch was in flight, forever."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.window_s)
            self._wake.clear()
            self._in_flight, self._queue = [self._seal(q) for q in self._queue.values()], {}
            await self._send(self._in_flight)
            self._in_flight = []

    async def flush(self) -> None:
        """On a clean stop: send what is in flight or queued (once; the log may be gone)."""
        batch = self._in_flight + [self._seal(q) for q in self._queue.values()]
        self._in_flight, self._queue = [], {}
        if batch:
            await self.log.append(batch)

    async def _send(self, batch: list[Append]) -> None:
        delay = 0.1
        while True:
            try:
                await self.log.append(batch)
            except LogUnavailable as e:
                log.warning("status reports not appended, retrying", extra={"error": str(e), "reports": len(batch)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)
                continue
            EVENTS_APPENDED.labels(event="TaskStatusChanged").inc(len(batch))
            return
