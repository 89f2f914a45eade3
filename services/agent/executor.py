"""The agent's plug-in point: one small protocol that runs a task's container somewhere.

The agent decides (`progress.next_step`) and the executor does: it never reports task states and
never sees the event log. Everything it knows about a task's container is a `Container` value, so
the same driving code serves local processes, simulated tasks and (later) Docker containers:

- `prepare` is Docker's pull + create, `start` its start, `stop` its stop with a grace period,
  `remove` its forced remove;
- `list` is "containers labelled with my node ids", `adopt` re-attaches to one after an agent restart;
- `watch` is the events stream: exits arrive through the callback, so a running task costs the agent
  nothing but a dictionary entry (no coroutine per task).

An executor outlives the agent's view of it: `close` detaches and never stops a container, so an
agent restart (even `kill -9`) leaves running tasks running.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from typing import Protocol

from schemas.logs import LogBatch, LogQuery
from schemas.task import Task

DEFAULT_STOP_GRACE_S = 10.0
"""Docker's default StopGracePeriod."""


class Phase(enum.IntEnum):
    """A container's life, in order: a later phase never goes back to an earlier one."""

    CREATED = 1
    RUNNING = 2
    EXITED = 3


class Health(enum.IntEnum):
    """A running container's health check, in the order observations win: a late `starting` never
    hides a `healthy` seen meanwhile, and once `unhealthy` the task fails whatever comes after."""

    NONE = 0
    """No health check (the spec has none and neither has the image)."""
    STARTING = 1
    HEALTHY = 2
    UNHEALTHY = 3


@dataclass(frozen=True, slots=True)
class Container:
    """What an executor observes of one task's container."""

    task_id: str
    node_id: str
    phase: Phase
    container_id: str = ""
    pid: int = 0
    exit_code: int = 0
    """Meaningful once EXITED (Docker also shows 0 while a container runs)."""
    health: Health = Health.NONE


def newer(old: Container | None, new: Container) -> Container:
    """The later of two observations: an exit seen by the watch beats a late `start` result, and a
    health change seen by the watch beats the `starting` an earlier inspect returned. A health event
    carries no PID: for the same container in the same phase, only its health (and a PID not yet
    known) is taken."""
    if old is None or new.phase > old.phase:
        return new
    if new.phase == old.phase and new.container_id == old.container_id:
        return replace(old, pid=old.pid or new.pid, health=max(old.health, new.health))
    return new if new.phase == old.phase and new.health >= old.health else old


class ExecutorError(Exception):
    """An operation failed. A temporary failure is retried without a state change; any other ends the
    task (rejected before it starts, failed after). The message is what the task's Err shows."""

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


class NoSuchContainer(ExecutorError):
    """The task has no container here (never created, or already removed): it simply has no logs."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task: no such container: {task_id}")


OnChange = Callable[[Container], None]


class Executor(Protocol):
    kind: str
    """`process`, `sim`, `docker`: shown as the node's engine version `shoal-<kind>`."""

    async def prepare(self, task: Task) -> Container:
        """Make the task ready to start (validate, pull, create). Idempotent, and safe to cancel."""
        ...

    async def start(self, task: Task) -> Container:
        """Start a prepared task; starting one already started returns its state. Not cancelled by the
        agent mid-way: whatever it launched must be recorded before it returns."""
        ...

    async def stop(self, task: Task) -> Container:
        """Send the stop signal, wait the task's grace period, then kill; returns the exited container."""
        ...

    async def remove(self, task_id: str) -> None:
        """Kill if still running and forget everything about the container (logs included)."""
        ...

    async def list(self) -> list[Container]:
        """Every container this executor holds for the agent's nodes, as it is now."""
        ...

    async def adopt(self, container: Container) -> Container:
        """Watch a container found by `list` after a restart; returns its state now."""
        ...

    def watch(self, on_change: OnChange) -> None:
        """Deliver every later exit (and health change) of a started or adopted container to `on_change`."""
        ...

    async def close(self) -> None:
        """Stop watching. Containers keep running, like Docker's when its client goes away."""
        ...

    def logs(self, task_id: str, query: LogQuery) -> AsyncGenerator[LogBatch, None]:
        """The container's output as the query asks, in batches of lines, stdout and stderr kept apart;
        with `follow`, until the container exits. ExecutorError if there is no such container. Closing
        the iterator early (the reader went away) releases everything it held."""
        ...


def stop_grace_s(task: Task) -> float:
    spec = task.spec.container_spec
    if spec is None or spec.stop_grace_period is None:
        return DEFAULT_STOP_GRACE_S
    return max(spec.stop_grace_period, 0) / 1e9
