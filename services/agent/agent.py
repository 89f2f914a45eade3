"""The agent process: join, heartbeat, follow this agent's own tasks, drive them, report.

Start-up order matters for crash safety. The node id exists on disk before the node joins. The
projection catches up with the log before anything is decided, and the executor's containers are
adopted before any task is driven, so a restarted agent continues where the log and the machine
say it is: a running task keeps running and nothing is reported twice.

A clean stop (SIGTERM) stops following and leaves every task running, as dockerd's containers
outlive a client: stopping tasks is the orchestrator's decision, expressed as desired states.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiodocker.exceptions
import msgspec
from prometheus_client import REGISTRY

from schemas.events import (
    Envelope,
    TaskAssigned,
    TaskCreated,
    TaskDesiredStateChanged,
    TaskPending,
    TaskRemoved,
    TaskStatusChanged,
)
from schemas.service import PortConfig
from schemas.task import Task
from services.agent.admission import EXIT_REFUSED, JoinRefused
from services.agent.config import AgentConfig
from services.agent.executor import Executor
from services.agent.executors.docker import DockerExecutor
from services.agent.executors.process import ProcessExecutor
from services.agent.executors.sim import SimExecutor
from services.agent.heartbeat import Publish, beat
from services.agent.identity import Identity, identities
from services.agent.ingress import kernel
from services.agent.ingress.kernel import KernelForwarder
from services.agent.ingress.mesh import Mesh
from services.agent.join import join
from services.agent.log_server import LogServer
from services.agent.ports import free_port_on, node_ports
from services.agent.reporter import Reporter
from services.agent.worker import Worker
from services.kernel import subjects
from services.kernel.eventlog import EventLog, LogUnavailable
from services.kernel.metrics import ProjectionCollector
from services.kernel.process import Runtime
from services.kernel.projection import Projection
from services.kernel.snapshot import SnapshotStore

log = logging.getLogger(__name__)

_FLUSH_ON_STOP_S = 2.0


class Agent:
    def __init__(self, eventlog: EventLog, publish: Publish, nodes: Sequence[Identity], executor: Executor, *,
                 heartbeat_s: float = 1.0, snapshots: SnapshotStore | None = None, token: str = "",
                 token_file: Path | None = None, ingress: bool = False, ingress_kernel: bool = False) -> None:
        self.log = eventlog
        self.publish = publish
        self.nodes = list(nodes)
        self.node_ids = frozenset(n.node_id for n in nodes)
        self.executor = executor
        self.heartbeat_s = heartbeat_s
        self.token = token
        self.token_file = token_file
        self.joined = False
        first = self.nodes[0].node_id
        self.projection = Projection(
            eventlog,
            # a sim agent hosting several nodes: one consumer filtered on each of their subjects, so it
            # reads only its own nodes' tasks (not every agent's)
            filter_subject=subjects.node_tasks(first) if len(self.nodes) == 1 else tuple(
                subjects.node_tasks(n.node_id) for n in self.nodes),
            snapshots=snapshots,
            snapshot_name=snapshot_name(self.node_ids),
        )
        self.reporter = Reporter(eventlog, self.projection)
        self.worker = Worker(executor, self.reporter.report, self.reporter.trace_of, self._ports_for)
        addrs = sorted({n.addr for n in nodes})
        self.mesh = (Mesh(eventlog, addrs, snapshots=snapshots, snapshot_name=f"ingress-{first}",
                          kernel=KernelForwarder(first, addrs) if ingress_kernel else None)
                     if ingress else None)
        self._addrs = {n.node_id: n.addr for n in nodes}

    async def run(self, before_close: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run until cancelled; `JoinRefused` (before anything is written) if a new node's token is refused.
        `before_close` runs on the way out while the executor is still open (the log server's streams
        read through it)."""
        try:
            await join(self.log, self.nodes, self.token, self.token_file)
            self.joined = True
            async with asyncio.TaskGroup() as tg:
                tg.create_task(beat(self.publish, [n.node_id for n in self.nodes], self.heartbeat_s))
                tg.create_task(self.reporter.run())
                if self.mesh is not None:
                    tg.create_task(self.mesh.run())
                await self._follow()
        finally:
            if before_close is not None:
                await before_close()
            await self._stop()

    async def _follow(self) -> None:
        await self.projection.start()
        state = self.projection.state
        for node_id in self.node_ids:
            for task in state.tasks_on_node(node_id):
                self.worker.update(task)
        # Registered before the next await, so no entry is applied unseen.
        self.projection.listeners.append(self._on_event)
        await self.worker.begin(await self.executor.list())

    def _ports_for(self, task: Task) -> list[PortConfig] | None:
        try:
            return node_ports(task, free_port_on(self._addrs.get(task.node_id, "127.0.0.1")))
        except OSError as e:  # no free port: the task runs, unreachable through the mesh, and says why
            log.warning("no free port for a task's published ports", extra={"task_id": task.id, "error": str(e)})
            return None

    def _on_event(self, seq: int, env: msgspec.Struct) -> None:
        if not isinstance(env, Envelope):
            return
        task_id = _task_id(env.event)
        if task_id is None:
            return
        task = self.projection.state.tasks.get(task_id)
        if task is None:
            self.worker.forget(task_id)
        elif task.node_id in self.node_ids:
            self.worker.update(task)

    async def _stop(self) -> None:
        await self.worker.close()
        await self.executor.close()
        await self.projection.stop()
        if not self.joined:
            return
        with contextlib.suppress(TimeoutError, LogUnavailable):
            async with asyncio.timeout(_FLUSH_ON_STOP_S):
                await self.reporter.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_FLUSH_ON_STOP_S):
                await self.projection.save_snapshot()
        log.info("agent stopped; tasks left running", extra={"node_id": self.nodes[0].node_id})


def snapshot_name(node_ids: Iterable[str]) -> str:
    """The agent projection's snapshot, named after the node set its filter reads: an agent restarted
    with other nodes starts fresh instead of resuming past older tasks of a node it did not follow.
    One node keeps its readable `agent-<node id>`; several are `agent-<count>-<hash of the sorted ids>`."""
    ids = sorted(node_ids)
    if len(ids) == 1:
        return f"agent-{ids[0]}"
    digest = hashlib.sha256(",".join(ids).encode()).hexdigest()[:12]
    return f"agent-{len(ids)}-{digest}"


def _task_id(event: object) -> str | None:
    match event:
        case TaskCreated() | TaskAssigned():
            return event.task.id
        case TaskPending() | TaskDesiredStateChanged() | TaskStatusChanged() | TaskRemoved():
            return event.task_id
    return None


def make_executor(config: AgentConfig, node_ids: list[str]) -> Executor:
    if config.executor == "sim":
        return SimExecutor(start_latency_s=config.sim_start_latency_s, failure_rate=config.sim_failure_rate)
    if config.executor == "docker":
        return DockerExecutor(config.engine, node_ids, config.addr)
    return ProcessExecutor(config.state_dir, config.addr)


async def _engine_info(config: AgentConfig) -> dict[str, Any] | None:
    """The engine's /info for the node description; an engine that does not answer is a clear error."""
    if config.executor != "docker":
        return None
    probe = DockerExecutor(config.engine, [])
    try:
        return await probe.describe()
    except (OSError, aiodocker.exceptions.DockerError) as e:
        raise SystemExit(f"the Docker engine at {config.engine} does not answer ({e}); "
                         "start it or pass --engine / SHOAL_DOCKER_HOST") from e
    finally:
        await probe.close()


async def serve(rt: Runtime, args: argparse.Namespace) -> None:
    """The agent as a Shoal process (`services.kernel.process.run`); a refused join exits `EXIT_REFUSED`."""
    config = AgentConfig.from_args(args)
    nodes = identities(config, await _engine_info(config))
    ingress_kernel = config.ingress and await kernel.choose(config.ingress_mode, [config.addr])
    if not ingress_kernel:
        await kernel.remove_left_behind(nodes[0].node_id)
    executor = make_executor(config, [n.node_id for n in nodes])
    agent = Agent(rt.log, rt.nc.publish, nodes, executor, heartbeat_s=config.heartbeat_s, snapshots=rt.snapshots,
                  token=config.token, token_file=config.token_file, ingress=config.ingress,
                  ingress_kernel=ingress_kernel)
    log.info("agent starting", extra={"node_ids": [n.node_id for n in nodes][:10], "nodes": len(nodes),
                                      "executor": config.executor, "state_dir": str(config.state_dir)})
    collector = ProjectionCollector(agent.projection)
    REGISTRY.register(collector)
    log_server = LogServer(rt.nc, [n.node_id for n in nodes], executor)
    await log_server.start()
    try:
        await agent.run(before_close=log_server.close)
    except JoinRefused as e:
        log.error("join refused", extra={"reason": str(e), "node_ids": [n.node_id for n in nodes][:10]})
        raise SystemExit(EXIT_REFUSED) from e
    finally:
        REGISTRY.unregister(collector)
