"""The logs endpoints over HTTP, in-process: the gateway (state from the in-memory log) reads a real
agent LogServer (sim executor) over a real nats-server. Frames, details, and what a client sees when
a node has no agent or the gateway's NATS connection is gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client

from schemas import logs
from services.agent.executors.sim import SimExecutor
from services.agent.log_server import LogServer
from services.api.app import make_app
from services.api.bootstrap import build
from services.api.context import Api
from services.api.log_fetcher import LogFetcher
from services.api.log_stream import MULTIPLEXED
from services.kernel import stdcopy, subjects
from services.kernel.jetstream import connect
from services.kernel.memlog import MemoryLog
from tests.nats_server import NatsServer
from tests.unit.test_api_app import SPEC
from tests.unit.test_api_helpers import FakeControlPlane

pytestmark = pytest.mark.integration


@dataclass
class Setup:
    client: TestClient[Any, Any]
    api: Api
    plane: FakeControlPlane
    executor: SimExecutor
    api_nc: Client

    async def frames(self, path: str) -> list[tuple[int, bytes]]:
        response = await asyncio.wait_for(self.client.get(path), 20)
        assert response.status == 200 and response.headers["Content-Type"] == MULTIPLEXED
        body = await asyncio.wait_for(response.read(), 20)
        got, rest = stdcopy.split(body)
        assert rest == b""
        return got


@pytest.fixture
async def setup(nats: NatsServer) -> AsyncIterator[Setup]:
    eventlog = MemoryLog()
    api = await build(eventlog)
    api_nc = await connect([nats.url], "api")
    agent_nc = await connect([nats.url], "agent")
    api.logs = LogFetcher(api_nc, timeout_s=1.0)
    plane = FakeControlPlane(eventlog)
    await plane.start()
    executor = SimExecutor()
    node = await plane.join("n1")
    server = LogServer(agent_nc, [node], executor)
    await server.start()
    for _ in range(100):  # the subscription reaches the server a moment after start()
        try:
            await api_nc.request(subjects.logs(node), logs.encode(logs.LogCancel(inbox="probe")), timeout=0.5)
            break
        except Exception:
            await asyncio.sleep(0.05)
    async with TestClient(TestServer(make_app(api))) as client:
        yield Setup(client, api, plane, executor, api_nc)
    await server.close()
    await plane.stop()
    await agent_nc.close()
    if not api_nc.is_closed:
        await api_nc.close()


async def service(s: Setup, nodes: list[str], replicas: int) -> list[str]:
    spec = {**SPEC, "Mode": {"Replicated": {"Replicas": replicas}}}
    response = await s.client.post("/v1.41/services/create", json=spec)
    service_id: str = (await response.json())["ID"]
    task_ids = await s.plane.run_service(service_id, nodes)
    await s.plane.catch_up()
    for task_id in task_ids:
        await s.executor.prepare(s.plane.projection.state.tasks[task_id])
    await s.api.projection.wait_for(await s.plane.log.last_seq())
    return task_ids


async def test_every_line_is_a_frame_with_the_details_the_cli_needs(setup: Setup) -> None:
    [n1] = list(setup.api.state.nodes)
    [task_id] = await service(setup, [n1], 1)
    task = setup.api.state.tasks[task_id]
    got = await setup.frames("/v1.41/services/web/logs?stdout=1&stderr=1&details=1&tail=all")
    details = (f"com.docker.swarm.node.id={n1},com.docker.swarm.service.id={task.service_id},"
               f"com.docker.swarm.task.id={task_id}").encode()
    assert got == [(stdcopy.STDOUT, details + f" simulated task {task_id}: no output\n".encode())]
    assert await setup.frames(f"/v1.41/tasks/{task_id[:10]}/logs?stdout=1&tail=0") == []


async def test_a_node_without_an_agent_is_named_in_a_final_error_frame(setup: Setup) -> None:
    [n1] = list(setup.api.state.nodes)
    n2 = await setup.plane.join("n2")
    await service(setup, [n1, n2], 2)
    got = await setup.frames("/v1.41/services/web/logs?stdout=1&stderr=1")
    assert [stream for stream, _ in got] == [stdcopy.STDOUT, stdcopy.SYSTEMERR]
    assert got[1][1].startswith(b"Error grabbing logs: warning: incomplete log stream.")
    assert f"node {n2} is not available".encode() in got[1][1]


async def test_without_nats_the_stream_ends_with_the_reason(setup: Setup) -> None:
    [n1] = list(setup.api.state.nodes)
    await service(setup, [n1], 1)
    await setup.api_nc.close()
    got = await setup.frames("/v1.41/services/web/logs?stdout=1&follow=1")
    assert [stream for stream, _ in got] == [stdcopy.SYSTEMERR]
    assert b"reading its logs failed" in got[0][1]
