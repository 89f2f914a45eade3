"""A real agent process (`python -m services.agent --executor process`) against a real nats-server.

The test plays orchestrator and scheduler by appending their events, and watches the log through
its own projection. One scenario, because starting Python processes is the expensive part: join,
heartbeats, run, kill (failed), stop (shutdown), then `kill -9` of the agent and a restart that
adopts the still-running task without reporting anything twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest
from nats.aio.msg import Msg

from schemas.events import (
    ClusterCreated,
    Envelope,
    NodeRejoined,
    ServiceCreated,
    TaskAssigned,
    TaskCreated,
    TaskDesiredStateChanged,
    TaskStatusChanged,
)
from schemas.heartbeat import Heartbeat
from schemas.service import ContainerSpec, ServiceSpec, TaskSpec
from schemas.task import Task, TaskState, TaskStatus
from services.agent.executors import procfs
from services.agent.executors.process import ProcessExecutor
from services.kernel.ids import new_id
from services.kernel.jetstream import JetStreamLog
from services.kernel.projection import Projection
from services.kernel.writer import Intent, Writer
from tests.nats_server import NatsServer, child_env
from tests.unit.test_executor_process import execs

pytestmark = pytest.mark.integration

S = TaskState
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "SWMTKN-1-c-w"


class AgentProcess:
    def __init__(self, nats_url: str, state_dir: Path) -> None:
        self.argv = [sys.executable, "-m", "services.agent", "--nats", nats_url, "--state-dir", str(state_dir),
                     "--executor", "process", "--heartbeat", "0.2", "--hostname", "itest", "--labels", "disk=ssd",
                     "--token", TOKEN]
        self.log_path = state_dir.parent / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=child_env(), stdout=out, stderr=out)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(10)


class Cluster:
    """The test's side: a projection of the whole log, a record of status reports, fake control plane."""

    def __init__(self, jslog: JetStreamLog) -> None:
        self.log = jslog
        self.view = Projection(jslog)
        self.reports: list[tuple[str, TaskStatus]] = []
        self.rejoins = 0
        self.view.listeners.append(self._record)
        self.service_id = new_id()

    def _record(self, seq: int, env: msgspec.Struct) -> None:
        assert isinstance(env, Envelope)
        if isinstance(env.event, TaskStatusChanged):
            self.reports.append((env.event.task_id, env.event.status))
        elif isinstance(env.event, NodeRejoined):
            self.rejoins += 1

    async def until(self, condition: Callable[[], bool], within_s: float = 10.0) -> None:
        """Polls: conditions span the log, heartbeats and /proc, which share no event."""
        for _ in range(int(within_s / 0.02)):
            if condition():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("condition not met in time")

    async def append(self, actor: str, event: object) -> None:
        [seq] = await Writer(self.log, actor).append([Intent(event)], self.view.state)  # type: ignore[arg-type]
        assert isinstance(seq, int)
        await asyncio.wait_for(self.view.wait_for(seq), 5)

    async def run(self, node_id: str, *argv: str) -> str:
        spec = TaskSpec(container_spec=ContainerSpec(image="busybox", args=list(argv), stop_grace_period=2_000_000_000))
        task = Task(id=new_id(), service_id=self.service_id, service_name="web", slot=len(self.view.state.tasks) + 1,
                    spec=spec, status=TaskStatus(state=S.PENDING, message="pending task scheduling"))
        await self.append("orchestrator", TaskCreated(task=task))
        await self.append("scheduler", TaskAssigned(task=task, node_id=node_id))
        return task.id

    async def until_state(self, task_id: str, state: TaskState) -> Task:
        await self.until(lambda: self.view.state.tasks[task_id].status.state is state)
        return self.view.state.tasks[task_id]

    def states(self, task_id: str) -> list[TaskState]:
        return [status.state for tid, status in self.reports if tid == task_id]


@pytest.fixture
async def state_dir(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "agent"
    yield path
    # Task processes outlive their agent by design; the test must not leave them behind.
    executor = ProcessExecutor(path)
    for container in await executor.list():
        await executor.remove(container.task_id)


@pytest.fixture
async def cluster(jslog: JetStreamLog) -> AsyncIterator[Cluster]:
    c = Cluster(jslog)
    await c.view.start()
    await c.append("api", ClusterCreated(cluster_id="c", worker_token=TOKEN))
    await c.append("api", ServiceCreated(service_id=c.service_id, spec=ServiceSpec(name="web")))
    yield c
    await c.view.stop()


def pid_of(task: Task) -> int:
    assert task.status.container_status is not None
    return task.status.container_status.pid


async def test_process_agent_end_to_end(nats: NatsServer, jslog: JetStreamLog, cluster: Cluster,
                                        state_dir: Path) -> None:
    heartbeats: list[Heartbeat] = []

    async def on_heartbeat(msg: Msg) -> None:
        heartbeats.append(msgspec.json.decode(msg.data, type=Heartbeat))

    await jslog.nc.subscribe("shoal.hb.>", cb=on_heartbeat)
    agent = AgentProcess(nats.url, state_dir)
    agent.start()
    try:
        # joins, with its identity on disk, and heartbeats
        await cluster.until(lambda: len(cluster.view.state.nodes) == 1)
        [node] = cluster.view.state.nodes.values()
        assert (state_dir / "node-id").read_text().split() == [node.id]
        assert (node.description.hostname, node.spec.labels, node.description.engine.engine_version) == (
            "itest", {"disk": "ssd"}, "shoal-process")
        assert node.description.resources.nano_cpus >= 1_000_000_000
        await cluster.until(lambda: bool(heartbeats))
        assert heartbeats[0] == Heartbeat(nodes=[node.id], period=0.2)

        # runs an assigned task through every state
        killed = await cluster.run(node.id, "sleep", "30")
        running = await cluster.until_state(killed, S.RUNNING)
        walk = [S.ACCEPTED, S.PREPARING, S.READY, S.STARTING, S.RUNNING]
        reported = cluster.states(killed)  # in order; a report replaced while queued is skipped
        assert reported == [s for s in walk if s in reported] and reported[-1] is S.RUNNING, reported
        assert await execs(pid_of(running), ["sleep", "30"]), procfs.cmdline(pid_of(running))

        # a killed process is a failed task, with its exit code
        os.kill(pid_of(running), signal.SIGKILL)
        failed = await cluster.until_state(killed, S.FAILED)
        assert (failed.status.err, failed.status.message) == ("task: non-zero exit (137)", "started")
        assert failed.status.container_status is not None and failed.status.container_status.exit_code == 137

        # desired shutdown stops the process
        stopped = await cluster.run(node.id, "sleep", "30")
        pid = pid_of(await cluster.until_state(stopped, S.RUNNING))
        await cluster.append("orchestrator", TaskDesiredStateChanged(task_id=stopped, desired_state=S.SHUTDOWN))
        await cluster.until_state(stopped, S.SHUTDOWN)
        assert not _alive(pid)

        # kill -9 of the agent: the task keeps running; the restarted agent adopts it
        survivor = await cluster.run(node.id, "sleep", "30")
        pid = pid_of(await cluster.until_state(survivor, S.RUNNING))
        reported = cluster.states(survivor)
        agent.kill9()
        await asyncio.sleep(0.2)
        assert _alive(pid)
        agent.start()
        await cluster.until(lambda: cluster.rejoins == 1)
        later = await cluster.run(node.id, "sleep", "30")  # once this runs, the restart has settled
        await cluster.until_state(later, S.RUNNING)
        assert len(cluster.view.state.nodes) == 1
        assert _alive(pid) and pid_of(cluster.view.state.tasks[survivor]) == pid
        assert cluster.states(survivor) == reported, "the restarted agent reported an adopted task again"

        # the adopted task is still under control
        await cluster.append("orchestrator", TaskDesiredStateChanged(task_id=survivor, desired_state=S.SHUTDOWN))
        await cluster.until_state(survivor, S.SHUTDOWN)
        assert not _alive(pid)

        # a clean stop leaves tasks running
        later_pid = pid_of(cluster.view.state.tasks[later])
        assert agent.terminate() == 0
        assert _alive(later_pid)
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.kill9()


def _alive(pid: int) -> bool:
    st = procfs.stat(pid)
    return st is not None and st.alive
