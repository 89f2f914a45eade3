"""Which trace a decision continues: the newest entry that changed what the decision is about."""

from __future__ import annotations

import re

import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from schemas.events import NodeUpdated, ServiceUpdated, TaskAssigned, TaskCreated, TaskDesiredStateChanged
from schemas.node import NodeSpec
from schemas.service import ServiceSpec
from schemas.task import Task, TaskState
from services.kernel.traces import Continuations, TraceIndex, child_traceparent, context_of, object_ids, remote_context

TASK = Task(id="t1", service_id="s1", node_id="n1")


def tp(n: int) -> dict[str, str]:
    return {"traceparent": f"00-{n:032x}-{n:016x}-01"}


def test_an_event_is_about_its_task_then_the_service_then_the_node() -> None:
    assert list(object_ids(TaskAssigned(task=TASK, node_id="n1"))) == ["t1", "s1", "n1"]
    change = TaskDesiredStateChanged(task_id="t1", desired_state=TaskState.SHUTDOWN)
    assert list(object_ids(change)) == ["t1"]
    assert list(object_ids(change, {"t1": TASK})) == ["t1", "s1", "n1"]


def test_the_newest_entry_about_any_of_its_objects_wins() -> None:
    index = TraceIndex()
    index.record(1, TaskCreated(task=TASK), tp(1))
    index.record(2, ServiceUpdated(service_id="s1", spec=ServiceSpec()), tp(2))
    change = TaskDesiredStateChanged(task_id="t1", desired_state=TaskState.SHUTDOWN)
    assert index.traceparent_for(change, {"t1": TASK}) == tp(2)["traceparent"]
    assert index.traceparent_for(change) == tp(1)["traceparent"]
    index.record(3, NodeUpdated(node_id="n1", spec=NodeSpec()), tp(3))
    assert index.traceparent_for(change, {"t1": TASK}) == tp(3)["traceparent"]


def test_a_task_event_is_not_news_about_its_node() -> None:
    index = TraceIndex()
    index.record(1, TaskCreated(task=TASK), tp(1))
    other = Task(id="t2", service_id="s2", node_id="n1")
    index.record(2, TaskAssigned(task=other, node_id="n1"), tp(2))
    assert index.traceparent_for(TaskAssigned(task=TASK, node_id="n1")) == tp(1)["traceparent"]


def test_entries_without_a_trace_are_ignored_and_the_oldest_objects_fall_out() -> None:
    index = TraceIndex(capacity=2)
    index.record(1, TaskCreated(task=TASK), None)
    assert len(index) == 0
    for i in range(1, 6):
        index.record(i, TaskCreated(task=Task(id=f"t{i}")), tp(i))
    assert len(index) <= 4
    assert index.traceparent_for(TaskCreated(task=Task(id="t1"))) is None
    assert index.traceparent_for(TaskCreated(task=Task(id="t5"))) == tp(5)["traceparent"]
    assert index.traceparent_for(TaskCreated(task=Task(id="t4"))) == tp(4)["traceparent"]


def test_a_decision_is_one_child_span_per_trace_it_continues() -> None:
    trace.set_tracer_provider(TracerProvider())
    index = TraceIndex()
    index.record(1, TaskCreated(task=TASK), tp(1))
    spans = Continuations("scheduler decide", index, 0)
    a = spans.context_for(TaskAssigned(task=TASK, node_id="n1"))
    b = spans.context_for(TaskAssigned(task=TASK, node_id="n1"))
    fresh = spans.context_for(TaskCreated(task=Task(id="t9")))
    assert a is b and fresh is not a
    carried: dict[str, str] = {}
    propagate.inject(carried, context=a)
    assert carried["traceparent"].split("-")[1] == f"{1:032x}"
    propagate.inject(carried, context=fresh)
    assert carried["traceparent"].split("-")[1] != f"{1:032x}"
    spans.end()


W3C = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
MALFORMED = ["", "garbage", "00-zz-yy-01", f"00-{0:032x}-b7ad6b7169203331-01", f"00-{1:032x}-{0:016x}-01",
             PARENT.upper(), PARENT + "-extra", "ff" + PARENT[2:], PARENT[:-1]]


def parts(traceparent: str) -> tuple[str, str, str]:
    match = W3C.fullmatch(traceparent)
    assert match is not None, traceparent
    trace_id, span_id, flags = match.groups()
    return trace_id, span_id, flags


@pytest.mark.parametrize("flags", ["00", "01", "02", "03"])
def test_a_child_traceparent_is_what_an_always_off_span_continuing_the_parent_carries(flags: str) -> None:
    parent = f"{PARENT[:-2]}{flags}"
    span = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test").start_span("x", context=context_of(parent))
    carried: dict[str, str] = {}
    propagate.inject(carried, context=trace.set_span_in_context(span))
    trace_id, span_id, child_flags = parts(child_traceparent(parent))
    assert trace_id == parts(parent)[0] == parts(carried["traceparent"])[0]
    assert span_id not in (parts(parent)[1], parts(child_traceparent(parent))[1])
    assert child_flags == parts(carried["traceparent"])[2], "unsampled, the random-trace-id flag kept"


def test_without_a_parent_a_child_traceparent_starts_a_new_trace_as_an_always_off_span_would() -> None:
    span = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test").start_span("x")
    carried: dict[str, str] = {}
    propagate.inject(carried, context=trace.set_span_in_context(span))
    first, second = parts(child_traceparent(None)), parts(child_traceparent(None))
    assert first[0] != second[0] and first[1] != second[1]
    assert first[2] == parts(carried["traceparent"])[2]


@pytest.mark.parametrize("malformed", MALFORMED)
def test_a_parent_the_propagator_would_not_continue_starts_a_new_trace(malformed: str) -> None:
    assert not trace.get_current_span(propagate.extract({"traceparent": malformed})).get_span_context().is_valid
    trace_id, _, flags = parts(child_traceparent(malformed))
    assert trace_id not in malformed and flags == "02"
    assert remote_context(malformed) is None


def test_a_remote_context_is_the_one_extract_makes() -> None:
    made, extracted = remote_context(PARENT), context_of(PARENT)
    assert made is not None and extracted is not None
    assert trace.get_current_span(made).get_span_context() == trace.get_current_span(extracted).get_span_context()
    assert remote_context(None) is None
