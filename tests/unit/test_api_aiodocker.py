"""aiodocker, a Docker SDK, drives the same lifecycle through its services, tasks and nodes clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiodocker
import pytest
from aiohttp.test_utils import TestServer

from services.api.app import make_app
from services.api.bootstrap import build
from services.kernel.memlog import MemoryLog
from tests.unit.test_api_helpers import FakeControlPlane


@pytest.fixture
async def sdk() -> AsyncIterator[tuple[Any, FakeControlPlane]]:
    log = MemoryLog()
    api = await build(log)
    plane = FakeControlPlane(log)
    await plane.start()
    async with TestServer(make_app(api)) as server:
        docker = aiodocker.Docker(url=str(server.make_url("")))
        yield docker, plane
        await docker.close()
    await plane.stop()
    await api.projection.stop()


async def test_the_service_lifecycle_through_aiodocker(sdk: tuple[Any, FakeControlPlane]) -> None:
    docker, plane = sdk
    node = await plane.join("n1", role="manager")
    created = await docker.services.create(
        {"ContainerSpec": {"Image": "busybox:latest", "Args": ["sleep", "60"]}},
        name="web", mode={"Replicated": {"Replicas": 2}},
    )
    await plane.run_service(created["ID"], [node])
    [listed] = await docker.services.list(filters={"name": "web"})
    assert listed["ID"] == created["ID"] and listed["Spec"]["Mode"]["Replicated"]["Replicas"] == 2
    tasks = await docker.tasks.list(filters={"service": "web"})
    assert sorted(t["Slot"] for t in tasks) == [1, 2] and {t["Status"]["State"] for t in tasks} == {"running"}
    assert (await docker.tasks.inspect(tasks[0]["ID"]))["NodeID"] == node

    version = str((await docker.services.inspect("web"))["Version"]["Index"])
    assert await docker.services.update("web", version, image="busybox:1.36")
    inspected = await docker.services.inspect("web")
    assert inspected["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "busybox:1.36"
    assert await docker.services.update("web", str(inspected["Version"]["Index"]), rollback=True)
    assert (await docker.services.inspect("web"))["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == \
        "busybox:latest"
    with pytest.raises(aiodocker.DockerError) as stale:
        await docker.services.update("web", version, image="busybox:2")
    assert stale.value.status == 500 and "update out of sequence" in stale.value.message

    assert await docker.services.delete("web")
    assert await docker.services.list() == []


async def test_nodes_through_aiodocker(sdk: tuple[Any, FakeControlPlane]) -> None:
    docker, plane = sdk
    manager = await plane.join("m1", role="manager")
    worker = await plane.join("w1")
    assert {n["ID"] for n in await docker.nodes.list()} == {manager, worker}
    assert [n["ID"] for n in await docker.nodes.list(filters={"role": "manager"})] == [manager]
    node = await docker.nodes.inspect(node_id="w1")
    spec = {**node["Spec"], "Availability": "drain", "Labels": {"dc": "east"}}
    await docker.nodes.update(node_id=worker, version=node["Version"]["Index"], spec=spec)
    assert (await docker.nodes.inspect(node_id=worker))["Spec"]["Availability"] == "drain"
    await docker.nodes.remove(node_id=worker, force=True)
    with pytest.raises(aiodocker.DockerError) as missing:
        await docker.nodes.inspect(node_id=worker)
    assert missing.value.status == 404
