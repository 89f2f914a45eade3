"""The agent's status reporter over the in-memory log: a task's queued report is replaced by its newer
one (as swarmkit's agent reporter does), a report already in flight is not; reports, and the
executor's work, continue the trace of the task's newest entry whether or not spans are recorded."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence

import pytest
from prometheus_client import REGISTRY

from schemas.codec import decode
from schemas.events import Envelope, ServiceCreated, TaskAssigned, TaskCreated, TaskStatusChanged
from schemas.service import ServiceSpec
from schemas.task import Task, TaskState, TaskStatus
from services.agent.executor import Container
from services.agent.executors.sim import SimExecutor
from services.agent.reporter import Reporter
from services.agent.worker import Worker
from services.kernel.eventlog import Append, AppendResult
from services.kernel.ids import new_id, parse_ns
from services.kernel.logs import JsonFormatter
from services.kernel.memlog import MemoryLog
from services.kernel.projection import Projection
from services.kernel.traces import TRACEPARENT
from services.kernel.writer import Intent, Writer

S = TaskState


class GatedLog(MemoryLog):
    """Holds each append until the test opens the gate, so a batch can be caught in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    async def append(self, batch: Sequence[Append]) -> list[AppendResult]:
        self.waiting.set()
        await self.gate.wait()
        self.waiting.clear()
        return await super().append(batch)


class Setup:
    def __init__(self) -> None:
        self.log = GatedLog()
        self.view = Projection(self.log)
        self.service_id = new_id()

    async def assigned(self, traceparent: str | None = None) -> Task:
        """A task assigned to n1, by entries carrying `traceparent` if given (else the current trace)."""
        task = Task(id=new_id(), service_id=self.service_id, slot=1, status=TaskStatus(state=S.PENDING))
        intents = [Intent(TaskCreated(task=task)), Intent(TaskAssigned(task=task, node_id="n1"))]
        writer = Writer(self.log, "test")
        if traceparent is None:
            await writer.append(intents, self.view.state)
        else:
            await self.log.append([writer.seal_with_headers(intent, self.view.state, {TRACEPARENT: traceparent})
                                   for intent in intents])
        await self.view.wait_for(len(self.log.entries))
        return self.view.state.tasks[task.id]

    def reports(self) -> list[tuple[str, TaskState, Envelope]]:
        envs = [decode(e.data) for e in self.log.entries]
        return [(env.event.task_id, env.event.status.state, env) for env in envs
                if isinstance(env.event, TaskStatusChanged)]

    async def until_reports(self, count: int) -> None:
        for _ in range(600):
            if len(self.reports()) >= count:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"{count} reports never appended: {self.reports()}")


@pytest.fixture
async def s() -> AsyncIterator[Setup]:
    setup = Setup()
    await setup.view.start()
    await Writer(setup.log, "api").append([Intent(ServiceCreated(service_id=setup.service_id,
                                                                   spec=ServiceSpec(name="web")))], setup.view.state)
    yield setup
    await setup.view.stop()


def replaced() -> float:
    return REGISTRY.get_sample_value("shoal_agent_status_reports_replaced_total") or 0.0


async def test_a_queued_report_is_replaced_by_the_newer_one_of_its_task(s: Setup) -> None:
    a, b = await s.assigned(), await s.assigned()
    reporter = Reporter(s.log, s.view)
    before = replaced()
    reporter.report(a, TaskStatus(state=S.ACCEPTED, message="accepted"))
    reporter.report(b, TaskStatus(state=S.ACCEPTED, message="accepted"))
    reporter.report(a, TaskStatus(state=S.PREPARING, message="preparing"))
    newest_ns = time.time_ns()
    reporter.report(a, TaskStatus(state=S.RUNNING, message="started"))
    run = asyncio.get_running_loop().create_task(reporter.run())
    try:
        await s.until_reports(2)
        await asyncio.sleep(0.05)  # nothing more follows
        reports = s.reports()
        assert [(task_id, state) for task_id, state, _ in reports] == [(a.id, S.RUNNING), (b.id, S.ACCEPTED)]
        assert parse_ns(reports[0][2].time) >= newest_ns, "the event's time is the newest transition's"
        assert replaced() - before == 2
        await s.view.wait_for(len(s.log.entries))
        assert s.view.state.tasks[a.id].status.state is S.RUNNING, "the fold takes the forward jump"
    finally:
        run.cancel()


async def test_a_report_in_flight_is_sent_and_the_next_queues_behind_it(s: Setup) -> None:
    a = await s.assigned()
    reporter = Reporter(s.log, s.view)
    run = asyncio.get_running_loop().create_task(reporter.run())
    try:
        s.log.gate.clear()
        reporter.report(a, TaskStatus(state=S.ACCEPTED, message="accepted"))
        await asyncio.wait_for(s.log.waiting.wait(), 5)  # accepted is in flight
        reporter.report(a, TaskStatus(state=S.PREPARING, message="preparing"))
        reporter.report(a, TaskStatus(state=S.STARTING, message="starting"))
        s.log.gate.set()
        await s.until_reports(2)
        await asyncio.sleep(0.05)
        assert [state for _, state, _ in s.reports()] == [S.ACCEPTED, S.STARTING]
    finally:
        run.cancel()


@pytest.mark.parametrize("recording", [True, False])
async def test_transitions_within_the_window_of_a_first_report_are_one_report(s: Setup, recording: bool) -> None:
    """A task that starts within the window is reported once, running; one that takes longer is
    reported when the window closes and again once it runs. Each report has its transition's time."""
    quick, slow = await s.assigned(), await s.assigned()
    reporter = Reporter(s.log, s.view, window_s=0.2, recording=recording)
    run = asyncio.get_running_loop().create_task(reporter.run())
    try:
        reporter.report(quick, TaskStatus(state=S.ACCEPTED, message="accepted"))
        reporter.report(slow, TaskStatus(state=S.ACCEPTED, message="accepted"))
        await asyncio.sleep(0.05)
        reporter.report(quick, TaskStatus(state=S.RUNNING, message="started"))
        reported_by_ns = time.time_ns()
        await s.until_reports(2)
        reporter.report(slow, TaskStatus(state=S.RUNNING, message="started"))
        await s.until_reports(3)
        reports = s.reports()
        assert [(task_id, state) for task_id, state, _ in reports] == [
            (quick.id, S.RUNNING), (slow.id, S.ACCEPTED), (slow.id, S.RUNNING)]
        assert parse_ns(reports[0][2].time) <= reported_by_ns, "sealed when sent, stamped when it happened"
    finally:
        run.cancel()


async def test_flush_on_stop_sends_the_newest_queued_report_of_each_task(s: Setup) -> None:
    a, b = await s.assigned(), await s.assigned()
    reporter = Reporter(s.log, s.view)
    reporter.report(a, TaskStatus(state=S.ACCEPTED, message="accepted"))
    reporter.report(b, TaskStatus(state=S.PREPARING, message="preparing"))
    reporter.report(a, TaskStatus(state=S.READY, message="prepared"))
    await reporter.flush()
    assert [(task_id, state) for task_id, state, _ in s.reports()] == [(a.id, S.READY), (b.id, S.PREPARING)]


PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def traceparent_of(env: Envelope, s: Setup) -> list[str]:
    [entry] = [e for e in s.log.entries if decode(e.data).id == env.id]
    assert entry.headers is not None
    return entry.headers[TRACEPARENT].split("-")


@pytest.mark.parametrize("recording", [True, False])
async def test_a_report_continues_the_trace_of_its_tasks_newest_entry(s: Setup, recording: bool) -> None:
    reporter = Reporter(s.log, s.view, recording=recording)
    a = await s.assigned(PARENT)
    reporter.report(a, TaskStatus(state=S.ACCEPTED, message="accepted"))
    await reporter.flush()
    await s.view.wait_for(len(s.log.entries))
    reporter.report(a, TaskStatus(state=S.PREPARING, message="preparing"))
    await reporter.flush()
    accepted, preparing = (traceparent_of(env, s) for _, _, env in s.reports())
    assert accepted[1] == preparing[1] == PARENT.split("-")[1], "the assignment's trace, then the report's own"


async def test_without_recording_a_report_carries_a_new_unsampled_span_id_in_its_tasks_trace(s: Setup) -> None:
    """What the span an `always_off` sampler started carried, made without one."""
    reporter = Reporter(s.log, s.view, recording=False)
    a, b = await s.assigned(PARENT), await s.assigned()
    reporter.report(a, TaskStatus(state=S.ACCEPTED, message="accepted"))
    reporter.report(b, TaskStatus(state=S.ACCEPTED, message="accepted"))
    await reporter.flush()
    (version, trace_id, span_id, flags), untraced = (traceparent_of(env, s) for _, _, env in s.reports())
    assert (version, trace_id, flags) == ("00", PARENT.split("-")[1], "00")
    assert span_id != PARENT.split("-")[2] and len(span_id) == 16 and int(span_id, 16)
    assert untraced[1] != trace_id and untraced[3] == "02", "no trace to continue: a new one"


class Lines(logging.Handler):
    """Log lines as the agent writes them: formatted when emitted, in the context of the call."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter("agent"))
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


class TalkingSim(SimExecutor):
    async def prepare(self, task: Task) -> Container:
        logging.getLogger("test.executor").warning("preparing")
        return await super().prepare(task)


@pytest.mark.parametrize("recording", [True, False])
async def test_the_executors_log_lines_carry_the_trace_of_the_tasks_newest_entry(s: Setup, recording: bool) -> None:
    reporter = Reporter(s.log, s.view, recording=recording)
    a = await s.assigned(PARENT)
    worker = Worker(TalkingSim(), reporter.report, reporter.trace_of, recording=recording)
    lines = Lines()
    logging.getLogger("test.executor").addHandler(lines)
    try:
        await worker.begin([])
        worker.update(a)
        for _ in range(600):
            if lines.lines:
                break
            await asyncio.sleep(0.005)
        assert [line.get("trace_id") for line in lines.lines] == [PARENT.split("-")[1]]
    finally:
        logging.getLogger("test.executor").removeHandler(lines)
        await worker.close()
