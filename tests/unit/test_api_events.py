"""`/events` (the log as Docker events) and the `/shoal/` audit endpoints, over the in-memory log."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from schemas.events import NodeJoined, NodeUpdated, ServiceCreated, ServiceUpdated, UpdateStatusChanged
from schemas.node import NodeDescription, NodeSpec
from schemas.service import ReplicatedService, ServiceMode, ServiceSpec, UpdateStatus
from services.api import docker_events
from services.api.app import make_app
from services.api.bootstrap import build
from services.api.context import Api
from services.api.history import parse_time
from services.kernel.eventlog import Append
from services.kernel.memlog import MemoryLog
from services.kernel.state import ClusterState
from tests.events import envelope
from tests.unit.test_api_app import SPEC
from tests.unit.test_api_helpers import FakeControlPlane


@pytest.fixture
async def env() -> AsyncIterator[tuple[TestClient[Any, Any], Api, FakeControlPlane]]:
    log = MemoryLog()
    api = await build(log)
    plane = FakeControlPlane(log)
    await plane.start()
    async with TestClient(TestServer(make_app(api))) as client:
        yield client, api, plane
    await plane.stop()
    await api.projection.stop()


async def lines(client: TestClient[Any, Any], path: str, **params: str) -> list[dict[str, Any]]:
    response = await client.get(path, params=params)
    assert response.status == 200 and response.headers["Content-Type"] == "application/json"
    return [json.loads(line) for line in (await response.text()).splitlines()]


def now_s() -> str:
    return f"{time.time():.9f}"


async def test_a_past_window_is_served_from_the_log_and_the_stream_ends(env: Any) -> None:
    client, _, plane = env
    since = now_s()
    node = await plane.join("n1")
    service_id = (await (await client.post("/v1.41/services/create", json=SPEC)).json())["ID"]
    await plane.run_service(service_id, [node])
    events = await lines(client, "/v1.41/events", since=since, until=now_s())
    assert [(e["Type"], e["Action"]) for e in events] == [
        ("node", "create"), ("service", "create"), ("container", "create"), ("container", "start")]
    service = events[1]
    assert service["Actor"] == {"ID": service_id, "Attributes": {"name": "web"}} and service["scope"] == "swarm"
    assert service["time"] == service["timeNano"] // 1_000_000_000
    container = events[3]["Actor"]["Attributes"]
    assert container["name"].startswith("web.1.") and container["com.docker.swarm.node.id"] == node
    only_services = await lines(client, "/v1.41/events", since=since, until=now_s(),
                                filters=json.dumps({"type": {"service": True}}))
    assert [e["Action"] for e in only_services] == ["create"]


async def test_a_live_stream_carries_new_events_until_until(env: Any) -> None:
    client, _, _ = env
    until = f"{time.time() + 1.5:.9f}"
    listening = asyncio.create_task(lines(client, "/v1.41/events", until=until))
    await asyncio.sleep(0.3)
    await client.post("/v1.41/services/create", json=SPEC)
    events = await asyncio.wait_for(listening, 5)
    assert [(e["Type"], e["Action"], e["Actor"]["Attributes"]["name"]) for e in events] == [
        ("service", "create", "web")]


async def test_bad_event_parameters_are_400s(env: Any) -> None:
    client, _, _ = env
    response = await client.get("/v1.41/events", params={"since": "yesterday"})
    assert response.status == 400 and "invalid value for since" in (await response.json())["message"]
    response = await client.get("/v1.41/events", params={"filters": json.dumps({"colour": {"red": True}})})
    assert response.status == 400 and (await response.json())["message"] == "Invalid filter 'colour'"


def test_updates_say_what_changed() -> None:
    translator = docker_events.Translator(ClusterState(), live=False)
    spec = ServiceSpec(name="web", mode=ServiceMode(replicated=ReplicatedService(replicas=2)))
    translator.translate(envelope(ServiceCreated(service_id="s", spec=spec)))
    scaled = ServiceSpec(name="web", mode=ServiceMode(replicated=ReplicatedService(replicas=3)))
    update = translator.translate(envelope(ServiceUpdated(service_id="s", spec=scaled)))
    assert update is not None and update["Actor"]["Attributes"] == {
        "name": "web", "replicas.old": "2", "replicas.new": "3"}
    status = translator.translate(envelope(UpdateStatusChanged(service_id="s",
                                                               update_status=UpdateStatus(state="updating"))))
    assert status is not None and status["Actor"]["Attributes"] == {"name": "web", "updatestate.new": "updating"}
    translator.translate(envelope(NodeJoined(node_id="n", spec=NodeSpec(), description=NodeDescription(hostname="h"))))
    drained = translator.translate(envelope(NodeUpdated(node_id="n", spec=NodeSpec(availability="drain"))))
    assert drained is not None and drained["Actor"]["Attributes"] == {
        "name": "h", "availability.old": "active", "availability.new": "drain"}


def test_event_times_are_unix_seconds_or_rfc3339() -> None:
    assert parse_time("1795315177", "since") == 1795315177 * 10**9
    assert parse_time("1795315177.5", "since") == 1795315177_500_000_000
    assert parse_time("2026-11-22T02:41:47.333885397Z", "since") == 1795315307_333885397


async def test_the_audit_log_lists_entries_with_their_sequence_and_subject(env: Any) -> None:
    client, _, _ = env
    await client.post("/v1.41/services/create", json=SPEC)
    entries = await lines(client, "/shoal/events")
    assert [e["Seq"] for e in entries] == [1, 2]
    assert entries[1]["Subject"].startswith("shoal.evt.service.") and entries[1]["Entry"]["Actor"] == "api:anonymous"
    assert entries[1]["Entry"]["Event"]["Type"] == "ServiceCreated"
    created = await lines(client, "/shoal/events", since="2", filters=json.dumps({"type": ["ServiceCreated"]}))
    assert [e["Seq"] for e in created] == [2]
    assert await lines(client, "/shoal/events", until="1") == entries[:1]


async def test_state_at_a_past_sequence_is_the_fold_of_the_log_up_to_it(env: Any) -> None:
    client, _, _ = env
    await client.post("/v1.41/services/create", json=SPEC)
    await client.delete("/v1.41/services/web")
    then = await (await client.get("/shoal/state", params={"at": "2"})).json()
    assert then["Seq"] == 2 and [s["Spec"]["Name"] for s in then["Services"]] == ["web"]
    now = await (await client.get("/shoal/state")).json()
    assert now["Seq"] == 3 and now["Services"] == [] and now["Cluster"]["ID"] == then["Cluster"]["ID"]
    response = await client.get("/shoal/state", params={"at": "soon"})
    assert response.status == 400


async def test_the_audit_log_can_be_followed(env: Any) -> None:
    client, _, _ = env
    response = await client.get("/shoal/events", params={"since": "2", "follow": "1"})
    await client.post("/v1.41/services/create", json=SPEC)
    line = json.loads(await asyncio.wait_for(response.content.readline(), 5))
    assert line["Seq"] == 2 and line["Entry"]["Event"]["Type"] == "ServiceCreated"
    response.close()


async def test_undecodable_entries_are_listed_as_such(env: Any) -> None:
    client, api, _ = env
    await api.projection.log.append([Append(subject="shoal.evt.cluster", data=b"garbage", msg_id="x")])
    entries = await lines(client, "/shoal/events", since="2")
    assert entries == [{"Seq": 2, "Subject": "shoal.evt.cluster", "Error": "undecodable entry"}]
