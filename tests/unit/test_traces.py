"""Which trace a decision continues: the newest entry that changed what the decision is about."""

from __future__ import annotations

from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider

from schemas.events import NodeUpdated, ServiceUpdated, TaskAssigned, TaskCreated, TaskDesiredStateChanged
from schemas.node import NodeSpec
from schemas.service import ServiceSpec
from schemas.task import Task, TaskState
from services.kernel.traces import Continuations, TraceIndex, object_ids

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
