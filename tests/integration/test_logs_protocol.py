"""The task log protocol over a real nats-server: an agent's LogServer with the process executor, read
by the api's LogFetcher. Tail, since, follow, stdout/stderr apart, flow control, and that a stream the
reader abandons (cancelled, or silent) is cleaned up in the agent."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client

from schemas import logs
from schemas.logs import STDERR, STDOUT, LogLine, LogOpen, LogQuery
from schemas.service import ContainerSpec, TaskSpec
from schemas.task import Task
from services.agent.executors.process import ProcessExecutor
from services.agent.log_server import LogServer, _Stream
from services.agent.metrics import LOG_STREAMS
from services.api.log_fetcher import LogFetcher, LogUnavailable
from services.kernel import subjects
from services.kernel.ids import new_id
from services.kernel.jetstream import connect
from tests.nats_server import NatsServer

pytestmark = pytest.mark.integration

NODE = "node1"
LEASE_S = 1.0


@dataclass
class Rig:
    executor: ProcessExecutor
    server: LogServer
    fetcher: LogFetcher
    reader: Client
    root: Path

    async def run(self, script: str) -> Task:
        task = Task(id=new_id(), node_id=NODE, spec=TaskSpec(container_spec=ContainerSpec(
            command=["sh", "-c"], args=[script], stop_grace_period=100_000_000)))
        await self.executor.prepare(task)
        await self.executor.start(task)
        return task

    def dir(self, task: Task) -> Path:
        return self.root / "tasks" / task.id

    async def read(self, task: Task, **query: object) -> list[LogLine]:
        lines: list[LogLine] = []
        async for batch in self.fetcher.lines(NODE, task.id, LogQuery(**query)):  # type: ignore[arg-type]
            lines += batch
        return lines


@pytest.fixture
async def rig(nats: NatsServer, tmp_path: Path) -> AsyncIterator[Rig]:
    agent_nc = await connect([nats.url], "agent")
    api_nc = await connect([nats.url], "api")
    executor = ProcessExecutor(tmp_path)
    server = LogServer(agent_nc, [NODE], executor, lease_s=LEASE_S)
    await server.start()
    await subscribed(api_nc)
    yield Rig(executor, server, LogFetcher(api_nc, renew_s=0.3, timeout_s=1.0), api_nc, tmp_path)
    await server.close()
    for container in await executor.list():
        await executor.remove(container.task_id)
    await executor.close()
    await agent_nc.close()
    await api_nc.close()


async def subscribed(nc: Client) -> None:
    """The agent's subscription reaches the server a moment after `start()`: wait until it answers."""
    for _ in range(100):
        with contextlib.suppress(Exception):
            await nc.request(subjects.logs(NODE), logs.encode(logs.LogCancel(inbox="probe")), timeout=0.5)
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the agent's log subscription never answered")


async def until(check: Callable[[], bool | Awaitable[bool]], what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        await asyncio.sleep(0.05)


def text(lines: list[LogLine]) -> list[str]:
    return [line.data.decode() for line in lines]


async def test_all_lines_then_tail_with_stdout_and_stderr_apart(rig: Rig) -> None:
    task = await rig.run("for i in 1 2 3 4 5; do echo out$i; done; echo err1 >&2; exit 0")
    await until(lambda: (rig.dir(task) / "exit").exists(), "the task exited")
    everything = await rig.read(task)
    assert sorted(text(everything)) == sorted([f"out{i}\n" for i in range(1, 6)] + ["err1\n"])
    assert {(line.stream, line.data) for line in everything if line.stream == STDERR} == {(STDERR, b"err1\n")}
    assert text(await rig.read(task, tail=2, stderr=False)) == ["out4\n", "out5\n"]
    assert text(await rig.read(task, stdout=False)) == ["err1\n"]
    assert await rig.read(task, tail=0) == []
    assert rig.server.streams == {}


async def test_since_skips_what_was_written_before(rig: Rig) -> None:
    task = await rig.run("echo old; while [ ! -f go ]; do sleep 0.05; done; echo new; sleep 30")
    await until(lambda: (rig.dir(task) / "stdout.idx").exists(), "the first line stamped by a checkpoint")
    await asyncio.sleep(0.05)
    since = time.time_ns()
    (rig.dir(task) / "go").touch()
    await until(lambda: len((rig.dir(task) / "stdout.idx").read_text().splitlines()) == 2, "the new line stamped")
    assert text(await rig.read(task, since=since)) == ["new\n"]
    old, new = await rig.read(task)
    assert old.time < since <= new.time


async def test_follow_receives_new_lines_and_a_cancelled_stream_ends_in_the_agent(rig: Rig) -> None:
    task = await rig.run("echo first; while [ ! -f go ]; do sleep 0.05; done; echo second; sleep 30")
    await until(lambda: (rig.dir(task) / "stdout.log").read_bytes() == b"first\n", "the first line written")
    batches = rig.fetcher.lines(NODE, task.id, LogQuery(follow=True))
    assert text(await anext(batches)) == ["first\n"]
    assert len(rig.server.streams) == 1
    (rig.dir(task) / "go").touch()
    assert text(await asyncio.wait_for(anext(batches), 10)) == ["second\n"]
    # Nothing more comes while the task runs: the stream stays open across several renewals.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(anext_task := asyncio.ensure_future(anext(batches))), 3 * LEASE_S)
    assert len(rig.server.streams) == 1
    anext_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await anext_task
    await batches.aclose()
    await until(lambda: rig.server.streams == {}, "the agent ended the cancelled stream")


async def test_follow_ends_when_the_task_exits(rig: Rig) -> None:
    task = await rig.run("echo a; while [ ! -f go ]; do sleep 0.05; done; echo b; exit 3")
    await until(lambda: (rig.dir(task) / "stdout.log").read_bytes() == b"a\n", "the first line written")

    async def later() -> None:
        await asyncio.sleep(0.5)
        (rig.dir(task) / "go").touch()

    go = asyncio.create_task(later())
    assert text(await asyncio.wait_for(rig.read(task, follow=True), 20)) == ["a\n", "b\n"]
    await go


async def test_an_abandoned_follow_stream_is_ended_by_its_lease(rig: Rig) -> None:
    task = await rig.run("echo hello; sleep 30")
    inbox = rig.reader.new_inbox()
    sub = await rig.reader.subscribe(inbox)
    reply = await rig.reader.request(subjects.logs(NODE), logs.encode(
        LogOpen(inbox=inbox, task_id=task.id, query=LogQuery(follow=True))), timeout=2)
    assert logs.decode_reply(reply.data).error == ""
    chunk = logs.decode_chunk((await sub.next_msg(timeout=5)).data)
    assert chunk.seq == 1 and text(chunk.lines) == ["hello\n"]
    assert len(rig.server.streams) == 1
    # The reader goes silent (a crashed api): no renewal, no cancel.
    await until(lambda: rig.server.streams == {}, "the agent dropped the stream after its lease", 5 * LEASE_S)
    await sub.unsubscribe()


async def test_the_window_holds_back_a_big_log_and_nothing_is_lost(rig: Rig) -> None:
    task = await rig.run("i=0; while [ $i -lt 20000 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; "
                         "i=$((i+1)); done")
    await until(lambda: (rig.dir(task) / "exit").exists(), "the task exited", 60)
    rig.fetcher.window = 2
    lines = []
    async for batch in rig.fetcher.lines(NODE, task.id, LogQuery(stderr=False)):
        lines += batch
        await asyncio.sleep(0.01)  # a slow client
    assert [line.data for line in lines] == [f"line-{i}-{'x' * 34}\n".encode() for i in range(20000)]


async def test_unknown_task_is_an_empty_stream(rig: Rig) -> None:
    assert await rig.read(Task(id="nosuchtask", node_id=NODE)) == []


async def test_a_node_without_an_agent_is_not_available(rig: Rig) -> None:
    started = time.monotonic()
    with pytest.raises(LogUnavailable, match="node ghost is not available"):
        async for _ in rig.fetcher.lines("ghost", "t", LogQuery()):
            pass
    assert time.monotonic() - started < 5


async def test_an_agent_that_stops_mid_follow_ends_the_stream(rig: Rig) -> None:
    task = await rig.run("echo up; sleep 30")
    batches = rig.fetcher.lines(NODE, task.id, LogQuery(follow=True))
    assert text(await anext(batches)) == ["up\n"]
    await rig.server.close()
    with pytest.raises(LogUnavailable, match=r"not available|no log stream"):
        await asyncio.wait_for(anext(batches), 10)


async def test_bad_control_messages_get_an_error_reply(rig: Rig) -> None:
    reply = await rig.reader.request(subjects.logs(NODE), b"\x92garbage", timeout=2)
    assert "not a log request" in logs.decode_reply(reply.data).error
    reply = await rig.reader.request(subjects.logs(NODE), logs.encode(logs.LogRenew(inbox="nope")), timeout=2)
    assert "no log stream nope" in logs.decode_reply(reply.data).error


async def test_a_stream_cancelled_before_it_starts_is_still_ended(rig: Rig) -> None:
    before = LOG_STREAMS._value.get()
    inbox = rig.reader.new_inbox()
    # Open and cancel in one step of the loop: the stream's task never runs its body.
    assert rig.server._handle(LogOpen(inbox=inbox, task_id="sometask", query=LogQuery(follow=True))) == ""
    assert rig.server._handle(logs.LogCancel(inbox=inbox)) == ""
    await until(lambda: rig.server.streams == {}, "the cancelled stream removed")
    assert LOG_STREAMS._value.get() == before


async def test_a_renewal_after_the_lease_expired_is_harmless(rig: Rig) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0) as lease:
            await asyncio.sleep(10)
    inbox = rig.reader.new_inbox()
    rig.server.streams[inbox] = _Stream(LogOpen(inbox=inbox, task_id="t"), lease=lease)
    try:
        assert rig.server._handle(logs.LogRenew(inbox=inbox, received=1)) == ""
    finally:
        del rig.server.streams[inbox]


@pytest.mark.parametrize(("inbox", "task_id", "error"), [
    ("shoal.evt.x", "t1", "must be a NATS reply inbox"),
    (None, "../../etc", "invalid task id"),
    (None, "a/b", "invalid task id"),
])
async def test_requests_for_other_subjects_or_paths_are_refused(rig: Rig, inbox: str | None, task_id: str,
                                                               error: str) -> None:
    watcher = await rig.reader.subscribe("shoal.evt.>")
    if inbox is not None:
        reply = await rig.reader.request(subjects.logs(NODE), logs.encode(
            LogOpen(inbox=inbox, task_id=task_id)), timeout=2)
        assert error in logs.decode_reply(reply.data).error
    else:
        with pytest.raises(LogUnavailable, match=error):
            await rig.read(Task(id=task_id, node_id=NODE))
    assert rig.server.streams == {}
    with pytest.raises(nats.errors.TimeoutError):
        await watcher.next_msg(timeout=0.3)
    await watcher.unsubscribe()


def test_lines_keep_their_stream() -> None:
    line = LogLine(stream=STDOUT, time=1, data=b"x")
    assert logs.decode_chunk(logs.encode(logs.LogChunk(seq=1, lines=[line]))).lines == [line]
