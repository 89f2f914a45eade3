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
"""

from __future__ import annotations

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
