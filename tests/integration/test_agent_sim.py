"""A `sim` agent hosting several nodes, in-process, against a real nats-server: one consumer for all
of its nodes, one heartbeat message for all of them, and status reports pipelined to JetStream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from nats.aio.msg import Msg

from schemas.events import ClusterCreated, ServiceCreated, TaskAssigned, TaskCreated, TaskDesiredStateChanged
from schemas.heartbeat import Heartbeat
from schemas.service import ContainerSpec, ServiceSpec, TaskSpec
from schemas.task import Task, TaskState, TaskStatus
from services.agent.agent import Agent
from services.agent.config import AgentConfig
from services.agent.executors.sim import SimExecutor
from services.agent.identity import identities
from services.kernel.ids import new_id
from services.kernel.jetstream import JetStreamLog
from services.kernel.projection import Projection
from services.kernel.writer import Intent, Writer

pytestmark = pytest.mark.integration

S = TaskState
NODES = 4
TASKS_PER_NODE = 25


async def until(view: Projection, condition: Callable[[], bool]) -> None:
    """Wait for the log to make `condition` true: re-checked after every applied entry."""
    async with asyncio.timeout(10):
        while not condition():
            view.updated.clear()
            await view.updated.wait()


async def _consumers_settle_at(jslog: JetStreamLog, count: int) -> None:
    """The join reads the cluster's tokens with a short-lived consumer, which the server drops once
    it is idle (5 s); what must remain is one consumer for all of the agent's nodes."""
    async with asyncio.timeout(20):
        while True:
            if (await jslog.js.stream_info("SHOAL")).state.consumer_count == count:
                return
            await asyncio.sleep(0.5)


async def test_sim_agent_runs_many_nodes_through_one_consumer(jslog: JetStreamLog, tmp_path: Path) -> None:
    config = AgentConfig(state_dir=tmp_path, executor="sim", engine="", addr="127.0.0.1", hostname="sim",
                         labels={}, heartbeat_s=0.1, nodes=NODES, sim_start_latency_s=0.01, sim_failure_rate=0.0,
                         sim_cpus=1, sim_memory_bytes=1 << 30)
    nodes = identities(config)
    heartbeats: list[Heartbeat] = []

    async def on_heartbeat(msg: Msg) -> None:
        heartbeats.append(msgspec.json.decode(msg.data, type=Heartbeat))

    await jslog.nc.subscribe(f"shoal.hb.{nodes[0].node_id}", cb=on_heartbeat)
    view = Projection(jslog)
    await view.start()
    await Writer(jslog, "api").append([Intent(ClusterCreated(cluster_id="c", worker_token="SWMTKN-1-c-w"))], view.state)
    info = await jslog.js.stream_info("SHOAL")
    consumers_before = info.state.consumer_count
    agent = Agent(jslog, jslog.nc.publish, nodes, SimExecutor(start_latency_s=0.01), heartbeat_s=0.1,
                  token="SWMTKN-1-c-w")
    running = asyncio.get_running_loop().create_task(agent.run())
    try:
        service_id = new_id()
        writer = Writer(jslog, "orchestrator")
        await writer.append([Intent(ServiceCreated(service_id=service_id, spec=ServiceSpec(name="sim")))], view.state)
        tasks = [Task(id=new_id(), service_id=service_id, slot=i + 1, status=TaskStatus(state=S.PENDING),
                      spec=TaskSpec(container_spec=ContainerSpec(image="busybox")))
                 for i in range(NODES * TASKS_PER_NODE)]
        await writer.append([Intent(TaskCreated(task=t)) for t in tasks], view.state)
        await writer.append([Intent(TaskAssigned(task=t, node_id=nodes[i % NODES].node_id))
                             for i, t in enumerate(tasks)], view.state)

        await until(view, lambda: all(t.id in view.state.tasks and view.state.tasks[t.id].status.state is S.RUNNING
                                      for t in tasks))
        assert len(view.state.nodes) == NODES
        await _consumers_settle_at(jslog, consumers_before + 1)
        assert heartbeats and heartbeats[-1].nodes == [n.node_id for n in nodes]

        await writer.append([Intent(TaskDesiredStateChanged(task_id=t.id, desired_state=S.SHUTDOWN))
                             for t in tasks[:10]], view.state)
        await until(view, lambda: all(view.state.tasks[t.id].status.state is S.SHUTDOWN for t in tasks[:10]))
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await view.stop()
