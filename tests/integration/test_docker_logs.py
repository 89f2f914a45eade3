"""The docker executor's `logs()` against a real engine: stdout and stderr kept apart, engine
timestamps, tail, since and follow (a private dockerd if none answers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from schemas.logs import STDERR, STDOUT, LogLine, LogQuery
from schemas.service import ContainerSpec, TaskSpec
from schemas.task import Task
from services.agent.executor import NoSuchContainer
from services.agent.executors.docker import DockerExecutor
from services.kernel.ids import new_id

pytestmark = pytest.mark.integration
NODE = "logs-node"


@pytest.fixture
async def ex(engine: str) -> AsyncIterator[DockerExecutor]:
    executor = DockerExecutor(engine, [f"{NODE}-{new_id()[:8]}"])
    yield executor
    for container in await executor.list():
        await executor.remove(container.task_id)
    await executor.close()


async def run(ex: DockerExecutor, script: str) -> Task:
    task = Task(id=new_id(), node_id=ex.node_ids[0], service_id="s", service_name="logs", slot=1,
                spec=TaskSpec(container_spec=ContainerSpec(image="shoal-busybox:test", command=["sh", "-c"],
                                                           args=[script], stop_grace_period=0)))
    await ex.prepare(task)
    await ex.start(task)
    return task


async def read(ex: DockerExecutor, task: Task, **query: object) -> list[LogLine]:
    lines: list[LogLine] = []
    async for batch in ex.logs(task.id, LogQuery(**query)):  # type: ignore[arg-type]
        lines += batch
    return lines


async def test_streams_apart_with_engine_times_tail_and_since(ex: DockerExecutor) -> None:
    before = time.time_ns()
    task = await run(ex, "echo out1; echo err1 >&2; echo out2; sleep 1; echo late")
    deadline = time.monotonic() + 30
    while len(lines := await read(ex, task)) < 4:
        assert time.monotonic() < deadline, lines
        await asyncio.sleep(0.2)
    assert [(line.stream, line.data) for line in lines if line.stream == STDERR] == [(STDERR, b"err1\n")]
    assert [line.data for line in lines if line.stream == STDOUT] == [b"out1\n", b"out2\n", b"late\n"]
    assert all(before <= line.time <= time.time_ns() for line in lines)
    assert [line.data for line in await read(ex, task, tail=1)] == [b"late\n"]
    assert [line.data for line in await read(ex, task, since=lines[-1].time)] == [b"late\n"]
    assert [line.data for line in await read(ex, task, stdout=False)] == [b"err1\n"]


async def test_follow_gets_new_lines_until_the_container_exits(ex: DockerExecutor) -> None:
    task = await run(ex, "echo first; sleep 1; echo second; sleep 1; exit 0")
    got = await asyncio.wait_for(read(ex, task, follow=True), 30)
    assert [line.data for line in got] == [b"first\n", b"second\n"]


async def test_no_such_container(ex: DockerExecutor) -> None:
    with pytest.raises(NoSuchContainer):
        await read(ex, Task(id="nosuchtask", node_id=ex.node_ids[0]))
