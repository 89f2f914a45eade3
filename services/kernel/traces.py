"""Trace continuity across the bus: which trace each task, service and node was last touched by.

The api puts a `traceparent` on every event a request appends. A process acting on such an event
continues that trace: the projection records, per object, the `traceparent` of the newest entry
about it, and whoever writes about that object later starts its span under that context. An intent
about several objects (a new task of a service) follows the newest of them, which is the event that
caused the decision (a scale-down follows the `ServiceUpdated`, not the task's old status).

Bounded: only the most recently touched objects are remembered (and entries far behind the end of
the log are not recorded at all while a projection catches up, so replay costs nothing more); an
object that fell out starts a new trace, which costs a broken link in a trace viewer, never a wrong
decision.

Where no span is recorded (`tracing.recording`), a writer need not start one to carry the trace:
`child_traceparent` makes the header such a span would have had, and `remote_context` the parent
context, as strings and small objects, without the global propagator or tracer.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context

from schemas.events import Event
from schemas.task import Task

TRACEPARENT = "traceparent"

_tracer = trace.get_tracer("shoal.kernel")


def object_ids(event: Event, tasks: Mapping[str, Task] | None = None) -> Iterator[str]:
    """The ids an event is about, the object it changes first: a task, then its service, then a node.
    With `tasks`, an event naming only a task id is also about that task's service and node."""
    task = getattr(event, "task", None)
    task_id: str = task.id if task is not None else getattr(event, "task_id", "")
    if task is None and tasks is not None:
        task = tasks.get(task_id)
    if task_id:
        yield task_id
    service_id: str = getattr(event, "service_id", "") or (task.service_id if task is not None else "")
    if service_id:
        yield service_id
    node_id: str = getattr(event, "node_id", "") or (task.node_id if task is not None else "")
    if node_id:
        yield node_id


def changed_id(event: Event) -> str:
    """The object an event changes (the first of `object_ids`), cheaply: it runs once per entry."""
    task = getattr(event, "task", None)
    if task is not None:
        return str(task.id)
    return str(getattr(event, "task_id", "") or getattr(event, "service_id", "") or getattr(event, "node_id", ""))


class TraceIndex:
    """`traceparent` of the newest entry that changed each object, with the entry's sequence.

    Only the object an event changes is recorded (a task's assignment is not news about its node),
    so one busy node or service does not pull unrelated tasks into its trace."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._by_id: dict[str, tuple[int, str]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def record(self, seq: int, event: Event, headers: Mapping[str, str] | None) -> None:
        traceparent = headers.get(TRACEPARENT) if headers else None
        if not traceparent:
            return
        object_id = changed_id(event)
        if not object_id:
            return
        by_id = self._by_id
        by_id.pop(object_id, None)  # re-inserted last: insertion order is the eviction order
        by_id[object_id] = (seq, traceparent)
        if len(by_id) > 2 * self.capacity:  # amortised: trim to the newest `capacity` at once
            self._by_id = dict(list(by_id.items())[-self.capacity:])

    def traceparent_for(self, event: Event, tasks: Mapping[str, Task] | None = None) -> str | None:
        """The trace the decision to write `event` continues: the newest one about what it touches."""
        return self.newest(object_ids(event, tasks))

    def newest(self, object_ids: Iterable[str]) -> str | None:
        found = [hit for object_id in object_ids if (hit := self._by_id.get(object_id)) is not None]
        return max(found)[1] if found else None


def context_of(traceparent: str | None) -> Context | None:
    """The remote parent a span continues (None: start a new trace)."""
    return propagate.extract({TRACEPARENT: traceparent}) if traceparent else None


_TRACEPARENT_FORMAT = re.compile(r"[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)")
_TRACEPARENT_MAX = 512
_RANDOM_TRACE_ID = int(trace.TraceFlags.RANDOM_TRACE_ID)


def _parsed(traceparent: str | None) -> tuple[str, str, int] | None:
    """Trace id, span id and flags of a `traceparent` the W3C propagator's `extract` would continue (its
    rules, so both paths agree on which parents continue); None for any other: a malformed header
    in the log starts a new trace, never an error."""
    if not traceparent or len(traceparent) > _TRACEPARENT_MAX:
        return None
    match = _TRACEPARENT_FORMAT.fullmatch(traceparent)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if trace_id == "0" * 32 or span_id == "0" * 16 or version == "ff" or (version == "00" and rest):
        return None
    return trace_id, span_id, int(flags, 16)


def _random_id(bits: int) -> int:
    """As the SDK's id generator makes them: random, never 0 (the invalid id)."""
    while True:
        if value := random.getrandbits(bits):
            return value


def child_traceparent(parent: str | None) -> str:
    """The `traceparent` a span continuing `parent` carries when the sampler is `always_off`, made
    without starting one: the parent's trace id, a new span id, unsampled, the parent's
    random-trace-id flag kept. No parent (or a malformed one): a new trace, flagged random as the
    SDK's ids are. Starting, injecting and ending a span only to carry this was half of what an
    agent's status report cost."""
    found = _parsed(parent)
    if found is None:
        return f"00-{_random_id(128):032x}-{_random_id(64):016x}-{_RANDOM_TRACE_ID:02x}"
    trace_id, _, flags = found
    return f"00-{trace_id}-{_random_id(64):016x}-{flags & _RANDOM_TRACE_ID:02x}"


def remote_context(traceparent: str | None) -> Context | None:
    """`context_of` without the global propagator, at half its cost: for work that starts no span but
    should run in the trace (so its log lines carry the trace id). None: not in a trace."""
    found = _parsed(traceparent)
    if found is None:
        return None
    trace_id, span_id, flags = found
    parent = trace.SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True,
                               trace_flags=trace.TraceFlags(flags))
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


class Continuations:
    """The spans of one decision: one per trace it continues, started when deciding began, each the
    parent of the intents that trace caused. Intents nobody's trace explains share one new trace."""

    def __init__(self, name: str, index: TraceIndex | None, start_ns: int) -> None:
        self.name = name
        self.index = index
        self.start_ns = start_ns
        self._spans: dict[str | None, tuple[trace.Span, Context]] = {}
        self._events: Counter[str | None] = Counter()

    def context_for(self, event: Event, tasks: Mapping[str, Task] | None = None) -> Context:
        traceparent = self.index.traceparent_for(event, tasks) if self.index is not None else None
        hit = self._spans.get(traceparent)
        if hit is None:
            span = _tracer.start_span(self.name, context=context_of(traceparent), start_time=self.start_ns)
            hit = self._spans[traceparent] = (span, trace.set_span_in_context(span))
        self._events[traceparent] += 1
        return hit[1]

    def end(self, error: str = "") -> None:
        for traceparent, (span, _) in self._spans.items():
            span.set_attribute("shoal.events", self._events[traceparent])
            if error:
                span.set_status(trace.StatusCode.ERROR, error)
            span.end()
        self._spans.clear()
        self._events.clear()
