"""What only the `sim` executor promises: latency, failure rate, scripted tasks, and scale."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from schemas.service import ContainerSpec, TaskSpec
from schemas.task import Task
from services.agent.executor import ExecutorError, Phase
from services.agent.executors.sim import SimExecutor
from services.kernel.ids import new_id
from tests.unit.test_executor_contract import Exits


def make_task(*env: str) -> Task:
    return Task(id=new_id(), node_id="node1", spec=TaskSpec(container_spec=ContainerSpec(env=list(env) or None)))


async def test_start_takes_the_configured_latency() -> None:
    ex = SimExecutor(start_latency_s=0.1)
    task = make_task()
    await ex.prepare(task)
    began = time.monotonic()
    assert (await ex.start(task)).phase is Phase.RUNNING
    assert time.monotonic() - began >= 0.09


async def test_failing_tasks_exit_1_one_latency_after_starting() -> None:
    ex = SimExecutor(start_latency_s=0.05, failure_rate=1.0)
    exits = Exits()
    ex.watch(exits)
    task = make_task()
    await ex.prepare(task)
    await ex.start(task)
    assert (await exits.wait(task.id)).exit_code == 1


async def test_failure_rate_is_a_fraction_of_tasks() -> None:
    ex = SimExecutor(failure_rate=0.5, rng=random.Random(7))
    exits = Exits()
    ex.watch(exits)
    tasks = [make_task() for _ in range(200)]
    for task in tasks:
        await ex.prepare(task)
        await ex.start(task)
    await asyncio.sleep(0.01)  # failures are due after a zero latency: let their timers fire
    running = sum(1 for c in await ex.list() if c.phase is Phase.RUNNING)
    assert len(exits.seen) + running == 200 and 60 < running < 140


async def test_scripted_rejection() -> None:
    with pytest.raises(ExecutorError, match="pull access denied"):
        await SimExecutor().prepare(make_task("SHOAL_SIM_REJECT=pull access denied"))


async def test_ten_thousand_tasks_in_one_executor() -> None:
    ex = SimExecutor()
    tasks = [make_task() for _ in range(10_000)]
    for task in tasks:
        await ex.prepare(task)
        await ex.start(task)
    containers = await ex.list()
    assert len(containers) == 10_000 and all(c.phase is Phase.RUNNING for c in containers)
    assert len({c.pid for c in containers}) == 10_000
