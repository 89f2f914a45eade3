"""The `sim` executor: tasks that only pretend to run, so one process can host 1,000 nodes x 100 tasks.

A simulated task costs a small record and, at most, one timer: it starts after the configured
latency, runs until stopped, and a configured fraction of started tasks fail (exit 1) one start
latency after they started. Stopping is instant (exit 143, as a process killed by SIGTERM).

A task's own Env can override that, so tests and demos can script a task's life:
- `SHOAL_SIM_EXIT=<code>` exits by itself with that code ...
- `SHOAL_SIM_RUN=<seconds>` ... after running that long (default 0 when SHOAL_SIM_EXIT is set);
- `SHOAL_SIM_STOP=<seconds>` takes that long to obey the stop signal; past the grace period it is
  killed (exit 137);
- `SHOAL_SIM_REJECT=<message>` fails preparation with that message (like a failed image pull).

The simulated containers live in a `SimWorld`, which outlives executor instances the way a Docker
engine outlives its clients; it lives in the agent's process, so an agent restart is a simulated
machine reboot: every simulated task is gone.

A simulated task's log is one line saying so; following it ends at once.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from schemas.logs import STDOUT, LogBatch, LogLine, LogQuery
from schemas.task import Task
from services.agent.executor import Container, ExecutorError, NoSuchContainer, OnChange, Phase, stop_grace_s

_SIGTERM_EXIT = 143
_SIGKILL_EXIT = 137


@dataclass(frozen=True, slots=True)
class _Script:
    exit_code: int | None = None
    run_s: float = 0.0
    stop_s: float = 0.0
    reject: str | None = None


def _script(task: Task) -> _Script:
    spec = task.spec.container_spec
    env: dict[str, str] = {}
    for item in spec.env or () if spec is not None else ():
        key, _, value = item.partition("=")
        env[key] = value
    exit_code = env.get("SHOAL_SIM_EXIT")
    return _Script(
        exit_code=int(exit_code) if exit_code else None,
        run_s=float(env.get("SHOAL_SIM_RUN") or 0),
        stop_s=float(env.get("SHOAL_SIM_STOP") or 0),
        reject=env.get("SHOAL_SIM_REJECT") or None,
    )


def _moved(c: Container, phase: Phase, pid: int, exit_code: int = 0) -> Container:
    """`dataclasses.replace` without its introspection, which costs more than the rest of a start."""
    return Container(task_id=c.task_id, node_id=c.node_id, phase=phase, container_id=c.container_id, pid=pid,
                     exit_code=exit_code)


class _SimTask:
    __slots__ = ("container", "script", "timer")

    def __init__(self, container: Container, script: _Script) -> None:
        self.container = container
        self.script = script
        self.timer: asyncio.TimerHandle | None = None


class SimWorld:
    """The simulated machine(s): every simulated container, and who hears about exits."""

    def __init__(self) -> None:
        self.tasks: dict[str, _SimTask] = {}
        self.on_change: OnChange | None = None
        self.pids = itertools.count(1000)

    def exit(self, sim: _SimTask, code: int) -> Container:
        if sim.timer is not None:
            sim.timer.cancel()
            sim.timer = None
        sim.container = _moved(sim.container, Phase.EXITED, sim.container.pid, code)
        return sim.container

    def exit_by_itself(self, sim: _SimTask, code: int) -> None:
        if sim.container.phase is Phase.RUNNING:
            container = self.exit(sim, code)
            if self.on_change is not None:
                self.on_change(container)


class SimExecutor:
    kind = "sim"

    def __init__(self, world: SimWorld | None = None, *, start_latency_s: float = 0.0, failure_rate: float = 0.0,
                 rng: random.Random | None = None) -> None:
        self.world = world or SimWorld()
        self.start_latency_s = start_latency_s
        self.failure_rate = failure_rate
        self.rng = rng or random.Random()

    async def prepare(self, task: Task) -> Container:
        sim = self.world.tasks.get(task.id)
        if sim is None:
            script = _script(task)
            if script.reject:
                raise ExecutorError(script.reject)
            container = Container(task_id=task.id, node_id=task.node_id, phase=Phase.CREATED, container_id=task.id)
            sim = self.world.tasks[task.id] = _SimTask(container, script)
        return sim.container

    async def start(self, task: Task) -> Container:
        sim = self.world.tasks.get(task.id)
        if sim is None:
            raise ExecutorError(f"task: no such container: {task.id}")
        if sim.container.phase is not Phase.CREATED:
            return sim.container
        if self.start_latency_s > 0:
            await asyncio.sleep(self.start_latency_s)
        sim.container = _moved(sim.container, Phase.RUNNING, next(self.world.pids))
        if sim.script.exit_code is not None:
            self._exit_later(sim, sim.script.run_s, sim.script.exit_code)
        elif self.failure_rate > 0 and self.rng.random() < self.failure_rate:
            self._exit_later(sim, self.start_latency_s, 1)
        return sim.container

    def _exit_later(self, sim: _SimTask, delay_s: float, code: int) -> None:
        sim.timer = asyncio.get_running_loop().call_later(delay_s, self.world.exit_by_itself, sim, code)

    async def stop(self, task: Task) -> Container:
        sim = self.world.tasks.get(task.id)
        if sim is None:
            raise ExecutorError(f"task: no such container: {task.id}")
        if sim.container.phase is not Phase.RUNNING:
            return sim.container
        if sim.timer is not None:
            sim.timer.cancel()
            sim.timer = None
        grace = stop_grace_s(task)
        obeys = sim.script.stop_s <= grace
        wait_s = sim.script.stop_s if obeys else grace
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        return self.world.exit(sim, _SIGTERM_EXIT if obeys else _SIGKILL_EXIT)

    async def remove(self, task_id: str) -> None:
        sim = self.world.tasks.pop(task_id, None)
        if sim is not None and sim.timer is not None:
            sim.timer.cancel()

    async def list(self) -> list[Container]:
        return [sim.container for sim in self.world.tasks.values()]

    async def adopt(self, container: Container) -> Container:
        sim = self.world.tasks.get(container.task_id)
        return sim.container if sim is not None else container

    def watch(self, on_change: OnChange) -> None:
        self.world.on_change = on_change

    async def close(self) -> None:
        self.world.on_change = None

    async def logs(self, task_id: str, query: LogQuery) -> AsyncGenerator[LogBatch, None]:
        if task_id not in self.world.tasks:
            raise NoSuchContainer(task_id)
        line = LogLine(stream=STDOUT, time=time.time_ns(), data=f"simulated task {task_id}: no output\n".encode())
        if query.stdout and query.tail != 0 and query.since <= line.time:
            yield [line]
