"""The executor contract: one abstract suite every executor passes (process, sim; docker later).

A subclass says how to make a fresh executor instance on the same machine (so "the agent restarted"
is a new instance) and how to write three kinds of task for its executor: one that runs until
stopped, one that exits by itself with a given code, and one that ignores the stop signal.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schemas.service import ContainerSpec, TaskSpec
from schemas.task import Task
from services.agent.executor import Container, Executor, ExecutorError, Phase
from services.agent.executors.process import ProcessExecutor
from services.agent.executors.sim import SimExecutor, SimWorld
from services.kernel.ids import new_id

GRACE_S = 0.3


class Exits:
    """An `on_change` callback that remembers what it heard, for tests to await."""

    def __init__(self) -> None:
        self.seen: dict[str, Container] = {}
        self._event = asyncio.Event()

    def __call__(self, container: Container) -> None:
        self.seen[container.task_id] = container
        self._event.set()

    async def wait(self, task_id: str, within_s: float = 5.0) -> Container:
        async with asyncio.timeout(within_s):
            while task_id not in self.seen:
                self._event.clear()
                await self._event.wait()
        return self.seen[task_id]


class ExecutorContract(abc.ABC):
    image = "busybox"
    """What the tasks' ContainerSpec names; ignored by process and sim, a local image for docker."""

    @abc.abstractmethod
    def new_executor(self) -> Executor:
        """A new instance on the same machine as every earlier one in this test."""

    @abc.abstractmethod
    def runs_until_stopped(self) -> ContainerSpec: ...

    @abc.abstractmethod
    def exits_with(self, code: int, after_s: float) -> ContainerSpec: ...

    @abc.abstractmethod
    def ignores_stop_signal(self) -> ContainerSpec: ...

    @pytest.fixture(autouse=True)
    async def _machine(self, tmp_path: Path) -> AsyncIterator[None]:
        self.tmp_path = tmp_path
        self.executors: list[Executor] = []
        self.task_ids: list[str] = []
        yield
        cleaner = self.new_executor()
        for task_id in self.task_ids:
            await cleaner.remove(task_id)
        await cleaner.close()
        for executor in self.executors:
            await executor.close()

    def executor(self) -> Executor:
        executor = self.new_executor()
        self.executors.append(executor)
        return executor

    def task(self, spec: ContainerSpec) -> Task:
        spec = ContainerSpec(image=self.image, command=spec.command, args=spec.args, env=spec.env,
                             stop_grace_period=int(GRACE_S * 1e9))
        task = Task(id=new_id(), node_id="node1", service_id="svc1", spec=TaskSpec(container_spec=spec))
        self.task_ids.append(task.id)
        return task

    async def started(self, executor: Executor, spec: ContainerSpec) -> tuple[Task, Container]:
        task = self.task(spec)
        await executor.prepare(task)
        return task, await executor.start(task)

    # -- the contract ---------------------------------------------------------------------------

    async def test_prepare_is_idempotent_and_creates(self) -> None:
        ex = self.executor()
        task = self.task(self.runs_until_stopped())
        first = await ex.prepare(task)
        again = await ex.prepare(task)
        assert first.phase is Phase.CREATED and again == first
        assert (first.task_id, first.node_id) == (task.id, "node1")
        assert [c.task_id for c in await ex.list()] == [task.id]

    async def test_start_runs_and_start_again_changes_nothing(self) -> None:
        ex = self.executor()
        task, running = await self.started(ex, self.runs_until_stopped())
        assert running.phase is Phase.RUNNING and running.pid > 0 and running.container_id
        assert await ex.start(task) == running
        assert [(c.task_id, c.phase, c.pid) for c in await ex.list()] == [(task.id, Phase.RUNNING, running.pid)]

    async def test_start_without_prepare_is_an_error(self) -> None:
        with pytest.raises(ExecutorError) as e:
            await self.executor().start(self.task(self.runs_until_stopped()))
        assert not e.value.temporary

    @pytest.mark.parametrize("code", [0, 3])
    async def test_exit_is_watched_with_its_code(self, code: int) -> None:
        ex = self.executor()
        exits = Exits()
        ex.watch(exits)
        task, _ = await self.started(ex, self.exits_with(code, 0.05))
        exited = await exits.wait(task.id)
        assert (exited.phase, exited.exit_code) == (Phase.EXITED, code)
        assert [(c.phase, c.exit_code) for c in await ex.list()] == [(Phase.EXITED, code)]

    async def test_stop_within_grace(self) -> None:
        ex = self.executor()
        task, _ = await self.started(ex, self.runs_until_stopped())
        stopped = await ex.stop(task)
        assert (stopped.phase, stopped.exit_code) == (Phase.EXITED, 143)  # 137 would mean killed after grace
        assert await ex.stop(task) == stopped

    async def test_stop_kills_after_grace(self) -> None:
        ex = self.executor()
        task, _ = await self.started(ex, self.ignores_stop_signal())
        await asyncio.sleep(0.2)  # a real program needs a moment to start ignoring the signal
        began = time.monotonic()
        stopped = await ex.stop(task)
        assert (stopped.phase, stopped.exit_code) == (Phase.EXITED, 137)
        assert time.monotonic() - began >= GRACE_S * 0.9

    async def test_remove_forgets_even_a_running_container(self) -> None:
        ex = self.executor()
        task, _ = await self.started(ex, self.runs_until_stopped())
        await ex.remove(task.id)
        assert await ex.list() == []
        await ex.remove(task.id)

    async def test_new_instance_adopts_a_running_container(self) -> None:
        first = self.executor()
        task, running = await self.started(first, self.runs_until_stopped())
        await first.close()
        second = self.executor()
        exits = Exits()
        second.watch(exits)
        [listed] = await second.list()
        assert (listed.phase, listed.pid) == (Phase.RUNNING, running.pid)
        assert await second.adopt(listed) == listed
        stopped = await second.stop(task)
        assert stopped.phase is Phase.EXITED
        assert [c.phase for c in await second.list()] == [Phase.EXITED]

    async def test_exit_while_nobody_watches_is_found_later(self) -> None:
        first = self.executor()
        task, _ = await self.started(first, self.exits_with(5, 0.05))
        await first.close()
        second = self.executor()
        for _ in range(250):
            [listed] = await second.list()
            if listed.phase is Phase.EXITED:
                break
            await asyncio.sleep(0.02)
        assert (listed.task_id, listed.phase, listed.exit_code) == (task.id, Phase.EXITED, 5)

    async def test_adopted_container_exit_is_watched(self) -> None:
        first = self.executor()
        task, _ = await self.started(first, self.exits_with(4, 0.4))
        await first.close()
        second = self.executor()
        exits = Exits()
        second.watch(exits)
        [listed] = await second.list()
        assert listed.phase is Phase.RUNNING
        await second.adopt(listed)
        exited = await exits.wait(task.id)
        assert (exited.phase, exited.exit_code) == (Phase.EXITED, 4)


class TestProcessExecutor(ExecutorContract):
    def new_executor(self) -> Executor:
        return ProcessExecutor(self.tmp_path)

    def runs_until_stopped(self) -> ContainerSpec:
        return ContainerSpec(args=["sleep", "30"])

    def exits_with(self, code: int, after_s: float) -> ContainerSpec:
        return ContainerSpec(command=["sh", "-c"], args=[f"sleep {after_s}; exit {code}"])

    def ignores_stop_signal(self) -> ContainerSpec:
        return ContainerSpec(command=["sh", "-c", "trap '' TERM; sleep 30"])


class TestSimExecutor(ExecutorContract):
    @pytest.fixture(autouse=True)
    def _world(self) -> None:
        self.world = SimWorld()

    def new_executor(self) -> Executor:
        return SimExecutor(self.world)

    def runs_until_stopped(self) -> ContainerSpec:
        return ContainerSpec()

    def exits_with(self, code: int, after_s: float) -> ContainerSpec:
        return ContainerSpec(env=[f"SHOAL_SIM_EXIT={code}", f"SHOAL_SIM_RUN={after_s}"])

    def ignores_stop_signal(self) -> ContainerSpec:
        return ContainerSpec(env=["SHOAL_SIM_STOP=60"])
