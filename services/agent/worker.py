"""The shell around `next_step`: drives every task on this agent's nodes through its executor.

Event-driven, with no coroutine per task: a task is looked at again only when something about it
changes (the log: its desired state or status; the executor: its container; an operation: done
or failed). At most one executor operation per task is in flight, so the executor never sees two
concurrent calls for one task. A running task is a dictionary entry; its exit arrives through the
executor's watch. That is what lets a `sim` agent carry 100,000 tasks.

Transitions are reported through a callback that only queues them (`reporter.py` appends them in
pipelined batches), so driving never waits for the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from schemas.service import PortConfig
from schemas.task import RANK, TERMINAL, ContainerStatus, PortStatus, Task, TaskState, TaskStatus
from services.agent.executor import Container, Executor, ExecutorError, Phase, newer, stop_grace_s
from services.agent.metrics import EXECUTOR_ERRORS, EXECUTOR_OPS, TASKS_RUNNING
from services.agent.ports import DRAIN_S, pick_avoiding
from services.agent.progress import Op, Step, failed, next_step
from services.kernel import tracing
from services.kernel.ports import endpoint_ports

log = logging.getLogger(__name__)

Report = Callable[[Task, TaskStatus], None]
TraceOf = Callable[[Task], Context | None]
"""The trace a task's executor work continues (None: not traced): each operation is a span in it or,
where spans are not recorded, runs in it (its log lines carry the trace id)."""
PortsFor = Callable[[Task], list[PortConfig] | None]
"""The node-local ports a task is reached on (`ports.node_ports`); None: it publishes none."""

_MAX_BACKOFF_S = 10.0
_EXECUTOR_OPS = (Op.PREPARE, Op.START, Op.STOP, Op.REMOVE)
_tracer = trace.get_tracer("shoal.agent")


class _Slot:
    """One task as this agent drives it."""

    __slots__ = ("backoff", "container", "drained", "gone", "op", "op_kind", "retry", "status", "task")

    def __init__(self, task: Task) -> None:
        self.task = task
        self.status = task.status
        """The last state this agent reported (or a later one written by someone else): it leads the
        projection by the reports still in flight."""
        self.container: Container | None = None
        self.op: asyncio.Task[None] | None = None
        self.op_kind: Op | None = None
        self.retry: asyncio.TimerHandle | None = None
        self.backoff = 0.0
        self.gone = False
        """The task left the cluster: its container is removed, then the slot."""
        self.drained = False
        """Its stop waited for the routing mesh to take it out of rotation."""


class Worker:
    def __init__(self, executor: Executor, report: Report, trace_of: TraceOf | None = None,
                 ports_for: PortsFor | None = None, *, recording: bool | None = None) -> None:
        self.executor = executor
        self.report = report
        self.trace_of = trace_of
        self.recording = tracing.recording() if recording is None else recording
        """Each executor operation is a span (default: as `tracing.setup` chose for this process)."""
        self.ports_for = ports_for
        self.slots: dict[str, _Slot] = {}
        self._ready = False
        self._closing = False
        self._running: set[str] = set()
        # Labelled children looked up once: `labels()` per call would cost more than deciding.
        self._ops = {op: EXECUTOR_OPS.labels(executor=executor.kind, op=op.value) for op in _EXECUTOR_OPS}
        executor.watch(self.observe)

    # -- inputs ---------------------------------------------------------------------------------

    def update(self, task: Task) -> None:
        """The log changed this task (or showed it for the first time)."""
        slot = self.slots.get(task.id)
        if slot is None:
            slot = self.slots[task.id] = _Slot(task)
        else:
            slot.task = task
            if RANK[task.status.state] > RANK[slot.status.state]:
                slot.status = task.status
            stopping = RANK[task.desired_state] >= RANK[TaskState.SHUTDOWN]
            if stopping and slot.op is not None and slot.op_kind is Op.PREPARE:
                slot.op.cancel()  # a long pull must not delay a shutdown
        self._kick(slot)

    def forget(self, task_id: str) -> None:
        """The task was removed from the cluster."""
        slot = self.slots.get(task_id)
        if slot is not None:
            slot.gone = True
            self._kick(slot)

    def observe(self, container: Container) -> None:
        """The executor saw a container change (an exit)."""
        slot = self.slots.get(container.task_id)
        if slot is not None:
            self._set_container(slot, newer(slot.container, container))
            self._kick(slot)

    async def begin(self, containers: Iterable[Container]) -> None:
        """Adopt the containers of known tasks, mark the others for removal, then start driving."""
        for listed in containers:
            slot = self.slots.get(listed.task_id)
            if slot is None:
                log.info("container of a task the cluster no longer has: removing",
                         extra={"task_id": listed.task_id, "node_id": listed.node_id})
                slot = self.slots[listed.task_id] = _Slot(Task(id=listed.task_id, node_id=listed.node_id))
                slot.gone = True
                self._set_container(slot, listed)
                continue
            EXECUTOR_OPS.labels(executor=self.executor.kind, op="adopt").inc()
            try:
                adopted = await self.executor.adopt(listed)
            except ExecutorError as e:
                EXECUTOR_ERRORS.labels(executor=self.executor.kind, op="adopt", kind="temporary").inc()
                log.warning("cannot adopt container", extra={"task_id": listed.task_id, "error": str(e)})
                adopted = listed
            self._set_container(slot, newer(slot.container, adopted))
        self._ready = True
        log.info("driving tasks", extra={"tasks": len(self.slots), "running": len(self._running)})
        for slot in list(self.slots.values()):
            self._kick(slot)

    async def close(self) -> None:
        """Stop driving. In-flight operations are cancelled; containers are left as they are."""
        self._closing = True
        ops = [slot.op for slot in self.slots.values() if slot.op is not None]
        for slot in self.slots.values():
            if slot.retry is not None:
                slot.retry.cancel()
        for op in ops:
            op.cancel()
        await asyncio.gather(*ops, return_exceptions=True)

    # -- deciding -------------------------------------------------------------------------------

    def _kick(self, slot: _Slot) -> None:
        if not self._ready or self._closing or slot.op is not None or slot.retry is not None:
            return
        if slot.gone:
            if slot.container is None:
                del self.slots[slot.task.id]
            else:
                self._perform(slot, Step(Op.REMOVE))
            return
        while True:
            step = next_step(self._view(slot), slot.container)
            if step.op is Op.REPORT:
                self._transition(slot, step)
            elif step.op in (Op.IDLE, Op.WAIT):
                return
            else:
                if not (step.op is Op.STOP and self._drain(slot)):
                    self._perform(slot, step)
                return

    def _view(self, slot: _Slot) -> Task:
        """The task with this agent's own latest status."""
        task = slot.task
        return task if task.status is slot.status else msgspec.structs.replace(task, status=slot.status)

    def _transition(self, slot: _Slot, step: Step) -> None:
        assert step.state is not None
        c = slot.container
        container_status = (ContainerStatus(container_id=c.container_id, pid=c.pid, exit_code=c.exit_code)
                            if c is not None else slot.status.container_status)
        slot.status = TaskStatus(state=step.state, message=step.message, err=step.err,
                                 container_status=container_status, port_status=self._ports(slot, step.state))
        self.report(slot.task, slot.status)

    def _ports(self, slot: _Slot, state: TaskState) -> PortStatus:
        """Chosen once, as the task starts preparing, so the executor can hand them to the task; none
        that another live task on this agent holds."""
        kept = slot.status.port_status
        ports_for = self.ports_for
        if (kept.ports is not None or state is not TaskState.PREPARING or ports_for is None
                or not endpoint_ports(slot.task.endpoint)):  # most publish none: no scan of every slot
            return kept
        taken = {(p.protocol, p.published_port) for other in self.slots.values()
                 if other is not slot and other.status.state not in TERMINAL
                 for p in other.status.port_status.ports or ()}
        return PortStatus(ports=pick_avoiding(lambda: ports_for(slot.task), taken))

    def _drain(self, slot: _Slot) -> bool:
        """A task reached through the routing mesh keeps running a moment after it is desired down, so
        every node's ingress stops sending it requests first (True: the stop is deferred)."""
        if slot.drained or not slot.status.port_status.ports:
            return False
        slot.drained = True
        delay = min(DRAIN_S, stop_grace_s(slot.task))
        slot.retry = asyncio.get_running_loop().call_later(delay, self._retry, slot)
        return True

    def _advance(self, slot: _Slot, step: Step) -> None:
        """Report an operation's outcome, unless the task moved past it meanwhile."""
        if step.state is not None and RANK[step.state] > RANK[slot.status.state]:
            self._transition(slot, step)

    def _set_container(self, slot: _Slot, container: Container | None) -> None:
        slot.container = container
        if container is not None and container.phase is Phase.RUNNING and not slot.gone:
            self._running.add(slot.task.id)
        else:
            self._running.discard(slot.task.id)
        TASKS_RUNNING.set(len(self._running))

    # -- doing ----------------------------------------------------------------------------------

    def _perform(self, slot: _Slot, step: Step) -> None:
        slot.op_kind = step.op
        slot.op = asyncio.get_running_loop().create_task(self._run(slot, step), name=f"{step.op.value}:{slot.task.id}")

    async def _run(self, slot: _Slot, step: Step) -> None:
        task = self._view(slot)
        try:
            container = await self._call(step.op, task)
        except asyncio.CancelledError:
            if self._closing:
                raise
            self._done(slot)  # a prepare given up for a shutdown: decide again
            return
        except ExecutorError as e:
            self._failed(slot, step, task, e)
            return
        except Exception as e:  # an executor bug must not wedge the task: retried like a temporary error
            log.exception("executor operation crashed", extra={"task_id": task.id, "op": step.op.value})
            self._failed(slot, step, task, ExecutorError(f"task: {e}", temporary=True))
            return
        slot.backoff = 0.0
        self._set_container(slot, None if container is None else newer(slot.container, container))
        self._advance(slot, step)
        self._done(slot)

    async def _call(self, op: Op, task: Task) -> Container | None:
        self._ops[op].inc()
        parent = self.trace_of(task) if self.trace_of is not None else None
        if parent is None:
            return await self._execute(op, task)
        if not self.recording:  # a span would be thrown away: run in the parent's context, a third of the cost
            token = otel_context.attach(parent)
            try:
                return await self._execute(op, task)
            finally:
                otel_context.detach(token)
        attributes = {"shoal.task_id": task.id, "shoal.executor": self.executor.kind}
        with _tracer.start_as_current_span(f"executor {op.value}", context=parent, attributes=attributes):
            return await self._execute(op, task)

    async def _execute(self, op: Op, task: Task) -> Container | None:
        match op:
            case Op.PREPARE:
                return await self.executor.prepare(task)
            case Op.START:
                return await self.executor.start(task)
            case Op.STOP:
                return await self.executor.stop(task)
            case Op.REMOVE:
                await self.executor.remove(task.id)
                return None
        raise ValueError(f"not an executor operation: {op}")

    def _failed(self, slot: _Slot, step: Step, task: Task, e: ExecutorError) -> None:
        kind = "temporary" if e.temporary else "fatal"
        EXECUTOR_ERRORS.labels(executor=self.executor.kind, op=step.op.value, kind=kind).inc()
        log.warning("executor operation failed",
                    extra={"task_id": task.id, "op": step.op.value, "error": str(e), "kind": kind})
        if e.temporary:
            slot.backoff = min(max(slot.backoff * 2, 0.5), _MAX_BACKOFF_S)
            slot.op = slot.op_kind = None
            slot.retry = asyncio.get_running_loop().call_later(slot.backoff, self._retry, slot)
            return
        if step.op in (Op.STOP, Op.REMOVE):
            # Nothing left to stop or remove: the container is gone already.
            self._set_container(slot, None)
            self._advance(slot, step)
        else:
            self._advance(slot, failed(task, str(e)))
        self._done(slot)

    def _retry(self, slot: _Slot) -> None:
        slot.retry = None
        self._kick(slot)

    def _done(self, slot: _Slot) -> None:
        slot.op = slot.op_kind = None
        self._kick(slot)
