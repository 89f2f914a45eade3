"""The gateway over the in-memory log, through HTTP: every endpoint and every error shape."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from schemas.cluster import DispatcherConfig, OrchestrationConfig, SwarmSpec
from schemas.codec import decode
from schemas.events import ClusterSpecUpdated, ServiceCreated, TaskCreated
from schemas.task import Task
from services.api import routes_system
from services.api.app import ALL_ROUTES, make_app
from services.api.bootstrap import build
from services.api.context import Api
from services.api.openapi import openapi_path
from services.kernel.eventlog import Append, AppendResult, LogUnavailable
from services.kernel.memlog import MemoryLog
from tests.unit.test_api_helpers import FakeControlPlane

Json = Any
SPEC: dict[str, Any] = {
    "Name": "web", "Labels": {},
    "TaskTemplate": {"ContainerSpec": {"Image": "busybox:latest", "Args": ["sleep", "3600"], "Init": False,
                                       "DNSConfig": {}},
                     "Resources": {"Limits": {}, "Reservations": {}}, "Placement": {}, "ForceUpdate": 0},
    "Mode": {"Replicated": {}}, "EndpointSpec": {"Mode": "vip"},
}


@dataclass
class Harness:
    client: TestClient[Any, Any]
    api: Api
    log: MemoryLog
    plane: FakeControlPlane

    async def call(self, method: str, path: str, status: int = 200, body: Json = None, **kw: Any) -> Json:
        response = await self.client.request(method, path, json=body, **kw)
        text = await response.text()
        assert response.status == status, text
        if response.status >= 400:
            assert response.headers["Content-Type"] == "application/json"
        return json.loads(text) if text else None

    async def error(self, method: str, path: str, status: int, body: Json = None, **kw: Any) -> str:
        message: str = (await self.call(method, path, status, body, **kw))["message"]
        return message

    async def create(self, **changes: Any) -> str:
        service_id: str = (await self.call("POST", "/v1.41/services/create", 201, {**SPEC, **changes}))["ID"]
        return service_id

    async def service(self, ref: str, **params: str) -> Json:
        return await self.call("GET", f"/v1.41/services/{ref}", params=params)

    async def update(self, ref: str, spec: Json, status: int = 200, **params: str) -> Json:
        version = str((await self.service(ref))["Version"]["Index"])
        return await self.call("POST", f"/v1.41/services/{ref}/update", status, spec,
                               params={"version": version, **params})


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    log = MemoryLog()
    api = await build(log)
    plane = FakeControlPlane(log)
    await plane.start()
    async with TestClient(TestServer(make_app(api))) as client:
        yield Harness(client, api, log, plane)
    await plane.stop()
    await api.projection.stop()


# -- system --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["HEAD", "GET"])
async def test_ping_carries_what_the_cli_negotiates_with(h: Harness, method: str) -> None:
    response = await h.client.request(method, "/_ping")
    assert response.status == 200
    assert response.headers["Api-Version"] == "1.41" and response.headers["Ostype"] == "linux"
    assert response.headers["Swarm"] == "active/manager" and response.headers["Docker-Experimental"] == "false"
    assert response.headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
    assert await response.text() == ("OK" if method == "GET" else "")


async def test_versioned_and_unversioned_paths_are_the_same(h: Harness) -> None:
    assert await h.call("GET", "/version") == await h.call("GET", "/v1.24/version")


async def test_versions_outside_the_supported_range_are_refused(h: Harness) -> None:
    too_new = await h.error("GET", "/v1.99/services", 400)
    assert too_new == "client version 1.99 is too new. Maximum supported API version is 1.41"
    assert "too old. Minimum supported API version is 1.12" in await h.error("GET", "/v1.5/services", 400)


async def test_version_reports_the_api_range(h: Harness) -> None:
    version = await h.call("GET", "/v1.41/version")
    assert (version["ApiVersion"], version["MinAPIVersion"], version["Os"]) == ("1.41", "1.12", "linux")
    assert version["Components"][0]["Name"] == "Engine"


async def test_info_names_the_oldest_ready_manager_as_self(h: Harness) -> None:
    worker = await h.plane.join("w1")
    manager = await h.plane.join("m1", role="manager")
    swarm = (await h.call("GET", "/v1.41/info"))["Swarm"]
    assert swarm["NodeID"] == manager and swarm["LocalNodeState"] == "active" and swarm["ControlAvailable"]
    assert (swarm["Nodes"], swarm["Managers"], swarm["Error"]) == (2, 1, "")
    assert swarm["RemoteManagers"] == [{"NodeID": manager, "Addr": "10.0.0.1:2377"}]
    assert h.api.state.cluster is not None and swarm["Cluster"]["ID"] == h.api.state.cluster.id
    assert "JoinTokens" not in swarm["Cluster"] and worker != manager


async def test_info_uses_the_configured_node(h: Harness) -> None:
    await h.plane.join("m1", role="manager")
    h.api.node_id = "configured"
    assert (await h.call("GET", "/info"))["Swarm"]["NodeID"] == "configured"


async def test_swarm_inspect_has_join_tokens_in_swarms_format(h: Harness) -> None:
    swarm = await h.call("GET", "/v1.41/swarm")
    worker, manager = swarm["JoinTokens"]["Worker"], swarm["JoinTokens"]["Manager"]
    assert worker.startswith("SWMTKN-1-") and len(worker) == len("SWMTKN-1-") + 50 + 1 + 25
    assert worker.split("-")[2] == manager.split("-")[2] and worker != manager
    assert swarm["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"] == 5


async def test_join_token_rotation_changes_only_the_rotated_secret(h: Harness) -> None:
    before = await h.call("GET", "/v1.41/swarm")
    params = {"version": str(before["Version"]["Index"]), "rotateWorkerToken": "true"}
    await h.call("POST", "/v1.41/swarm/update", body=before["Spec"], params=params)
    after = await h.call("GET", "/v1.41/swarm")
    assert after["JoinTokens"]["Worker"] != before["JoinTokens"]["Worker"]
    assert after["JoinTokens"]["Manager"] == before["JoinTokens"]["Manager"]
    stale = await h.error("POST", "/v1.41/swarm/update", 500, before["Spec"], params=params)
    assert stale == "rpc error: code = Unknown desc = update out of sequence"


async def test_info_and_swarm_show_the_settings_in_the_log_and_update_sets_the_limit(h: Harness) -> None:
    recorded = SwarmSpec(orchestration=OrchestrationConfig(task_history_retention_limit=2),
                         dispatcher=DispatcherConfig(heartbeat_period=2_000_000_000))
    await h.api.projection.wait_for(await h.plane.append(ClusterSpecUpdated(spec=recorded)))
    shown = (await h.call("GET", "/v1.41/info"))["Swarm"]["Cluster"]["Spec"]
    assert (shown["Orchestration"], shown["Dispatcher"]) == (
        {"TaskHistoryRetentionLimit": 2}, {"HeartbeatPeriod": 2_000_000_000})

    swarm = await h.call("GET", "/v1.41/swarm")
    body = {**swarm["Spec"], "Orchestration": {"TaskHistoryRetentionLimit": 9}}
    await h.call("POST", "/v1.41/swarm/update", body=body, params={"version": str(swarm["Version"]["Index"])})
    after = await h.call("GET", "/v1.41/swarm")
    assert (after["Spec"]["Orchestration"], after["Spec"]["Dispatcher"]) == (
        {"TaskHistoryRetentionLimit": 9}, {"HeartbeatPeriod": 2_000_000_000})
    assert after["JoinTokens"] == swarm["JoinTokens"] and after["Version"]["Index"] > swarm["Version"]["Index"]

    body = {**after["Spec"], "Dispatcher": {"HeartbeatPeriod": 5_000_000_000}}
    params = {"version": str(after["Version"]["Index"])}
    refused = await h.error("POST", "/v1.41/swarm/update", 400, body, params=params)
    assert "--heartbeat" in refused and "2s" in refused


async def test_swarm_init_and_join_say_the_node_is_already_in_a_swarm(h: Harness) -> None:
    assert "already part of a swarm" in await h.error("POST", "/v1.41/swarm/init", 503, {})
    assert "already part of a swarm" in await h.error("POST", "/v1.41/swarm/join", 503, {})


async def test_distribution_fails_so_the_cli_keeps_the_image_as_typed(h: Harness) -> None:
    assert "busybox:latest" in await h.error("GET", "/v1.41/distribution/busybox:latest/json", 404)
    assert "ghcr.io/a/b:1" in await h.error("GET", "/v1.41/distribution/ghcr.io/a/b:1/json", 404)


async def test_only_one_cluster_is_ever_created(h: Harness) -> None:
    second = await build(h.log)
    assert second.state.cluster == h.api.state.cluster
    await second.projection.stop()


# -- services ------------------------------------------------------------------------------------


async def test_create_stores_what_dockerd_stores(h: Harness) -> None:
    service_id = await h.create()
    svc = await h.service(service_id)
    assert svc["ID"] == service_id and svc["Spec"]["Mode"] == {"Replicated": {"Replicas": 1}}
    assert svc["Spec"]["TaskTemplate"]["Runtime"] == "container"
    assert svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Isolation"] == "default"
    assert svc["Version"]["Index"] > 0 and svc["CreatedAt"].endswith("Z")


async def test_create_answers_201_with_only_the_id(h: Harness) -> None:
    response = await h.client.post("/v1.41/services/create", json=SPEC)
    assert response.status == 201 and list(await response.json()) == ["ID"]


async def test_a_spec_read_back_can_be_sent_again_unchanged(h: Harness) -> None:
    await h.create()
    spec = (await h.service("web"))["Spec"]
    await h.update("web", spec)
    assert (await h.service("web"))["Spec"] == spec


async def test_create_without_a_name_gets_a_generated_one(h: Harness) -> None:
    service_id = await h.create(Name="")
    name = (await h.service(service_id))["Spec"]["Name"]
    assert "_" in name and name.replace("_", "").isalnum()


async def test_a_duplicate_name_is_a_409_in_dockers_words(h: Harness) -> None:
    await h.create()
    message = await h.error("POST", "/v1.41/services/create", 409, SPEC)
    assert message == ("rpc error: code = AlreadyExists desc = name conflicts with an existing object: "
                       "service web already exists")


async def test_concurrent_creates_of_one_name_from_two_gateways_admit_one(h: Harness) -> None:
    other = await build(h.log)
    async with TestClient(TestServer(make_app(other))) as second:
        responses = await asyncio.gather(*(c.post("/v1.41/services/create", json=SPEC)
                                           for c in (h.client, second, h.client, second)))
        assert sorted(r.status for r in responses) == [201, 409, 409, 409]
    await other.projection.stop()
    assert len(h.api.state.services) == 1


async def test_concurrent_creates_through_one_gateway_take_turns_instead_of_refusing_each_other(h: Harness) -> None:
    conflicts = REGISTRY.get_sample_value("shoal_append_conflicts_total", {"writer": "api", "event": "ServiceCreated"})
    responses = await asyncio.gather(*(h.client.post("/v1.41/services/create", json={**SPEC, "Name": f"web{i}"})
                                       for i in range(12)))
    assert [r.status for r in responses] == [201] * 12
    assert len(h.api.state.services) == 12
    after = REGISTRY.get_sample_value("shoal_append_conflicts_total", {"writer": "api", "event": "ServiceCreated"})
    assert (after or 0) == (conflicts or 0), "no create refused another"


@pytest.mark.parametrize(("changes", "message"), [
    ({"Name": "bad name!"}, "rpc error: code = InvalidArgument desc = name must be valid as a DNS name component"),
    ({"Name": "a" * 64}, "name must be 63 characters or fewer"),
    ({"TaskTemplate": {}}, "mismatched Runtime and *Spec fields"),
    ({"TaskTemplate": {"ContainerSpec": {}}}, "ContainerSpec: image reference must be provided"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "Bad Image"}}}, "is not a valid repository/tag"),
    ({"Mode": {"Replicated": {"Replicas": -1}}}, "Mode.Replicated.Replicas: must not be negative"),
    ({"Mode": {"Replicated": {"Replicas": "3"}}}, "Expected `int | null`, got `str` - at `$.Mode.Replicated.Replicas`"),
    ({"Mode": {"Replicated": {}, "Global": {}}}, "Mode: set only one of"),
    ({"UpdateConfig": {"Delay": -1}}, "UpdateConfig.Delay: must not be negative"),
    ({"UpdateConfig": {"FailureAction": "explode"}}, "UpdateConfig.FailureAction: 'explode' is not one of"),
    ({"Bogus": 1}, "Object contains unknown field `Bogus` - at `$`"),
    ({"TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Imgae": "x"}}},
     "unknown field `Imgae` - at `$.TaskTemplate.ContainerSpec`"),
])
async def test_invalid_specs_are_400s_that_name_the_field(h: Harness, changes: Json, message: str) -> None:
    assert message in await h.error("POST", "/v1.41/services/create", 400, {**SPEC, **changes})


@pytest.mark.parametrize("body", [b"{bad", b"", b"null", b"[]", b'"x"', b"1e999999", b"[" * 100_000])
async def test_malformed_bodies_are_400s(h: Harness, body: bytes) -> None:
    response = await h.client.post("/v1.41/services/create", data=body)
    assert response.status == 400 and response.headers["Content-Type"] == "application/json"
    assert (await response.json())["message"]


async def test_a_huge_body_is_refused_without_harm(h: Harness) -> None:
    response = await h.client.post("/v1.41/services/create", data=b" " * (5 * 1024 * 1024))
    assert response.status == 413 and "Maximum request body size" in (await response.json())["message"]
    assert (await h.client.get("/_ping")).status == 200


async def test_list_with_status_counts_running_and_desired_tasks(h: Harness) -> None:
    node = await h.plane.join("n1")
    service_id = await h.create(Mode={"Replicated": {"Replicas": 2}})
    await h.plane.run_service(service_id, [node])
    [svc] = await h.call("GET", "/v1.41/services", params={"status": "true"})
    assert svc["ServiceStatus"] == {"RunningTasks": 2, "DesiredTasks": 2, "CompletedTasks": 0}
    [plain] = await h.call("GET", "/v1.41/services")
    assert plain["ServiceStatus"] is None
    [old] = await h.call("GET", "/v1.40/services", params={"status": "1"})
    assert old["ServiceStatus"] is None


async def test_list_filters(h: Harness) -> None:
    web = await h.create(Name="web", Labels={"tier": "front"})
    await h.create(Name="worker", Mode={"Global": {}})

    async def names(filters: Json) -> list[str]:
        services = await h.call("GET", "/v1.41/services", params={"filters": json.dumps(filters)})
        return sorted(s["Spec"]["Name"] for s in services)

    assert await names({"name": {"w": True}}) == ["web", "worker"]
    assert await names({"name": ["wor"]}) == ["worker"]
    assert await names({"id": {web[:5]: True}}) == ["web"]
    assert await names({"label": {"tier=front": True}}) == ["web"]
    assert await names({"label": {"tier=back": True}}) == []
    assert await names({"mode": {"global": True}}) == ["worker"]
    assert await names({"name": {"web": True}, "mode": {"global": True}}) == []
    bogus = {"filters": json.dumps({"bogus": {"x": True}})}
    assert await h.error("GET", "/v1.41/services", 400, params=bogus) == "Invalid filter 'bogus'"
    assert "invalid filters" in await h.error("GET", "/v1.41/services", 400, params={"filters": "{"})


async def test_inspect_by_id_name_or_unique_prefix(h: Harness) -> None:
    service_id = await h.create()
    for ref in (service_id, "web", service_id[:6]):
        assert (await h.service(ref))["ID"] == service_id
    assert await h.error("GET", "/v1.41/services/nosuchsvc", 404) == "service nosuchsvc not found"
    assert await h.error("GET", "/v1.41/services/WEB", 404) == "service WEB not found"


async def test_inspect_with_defaults_fills_what_swarmkit_fills(h: Harness) -> None:
    await h.create()
    spec = (await h.service("web", insertDefaults="true"))["Spec"]
    assert spec["UpdateConfig"] == spec["RollbackConfig"] == {
        "Parallelism": 1, "FailureAction": "pause", "Monitor": 5_000_000_000, "MaxFailureRatio": 0,
        "Order": "stop-first"}
    assert spec["TaskTemplate"]["RestartPolicy"] == {"Condition": "any", "Delay": 5_000_000_000, "MaxAttempts": 0}
    assert spec["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"] == 10_000_000_000
    assert "UpdateConfig" not in (await h.service("web", insertDefaults="false"))["Spec"]


async def test_scale_is_an_update_with_the_current_version(h: Harness) -> None:
    await h.create()
    spec = (await h.service("web"))["Spec"]
    spec["Mode"]["Replicated"]["Replicas"] = 3
    assert await h.update("web", spec) == {"Warnings": None}
    svc = await h.service("web")
    assert svc["Spec"]["Mode"]["Replicated"]["Replicas"] == 3 and svc["PreviousSpec"]["Mode"]["Replicated"] == {
        "Replicas": 1}


async def test_a_stale_version_is_out_of_sequence(h: Harness) -> None:
    await h.create()
    svc = await h.service("web")
    params = {"version": str(svc["Version"]["Index"])}
    await h.call("POST", "/v1.41/services/web/update", 200, svc["Spec"], params=params)
    message = await h.error("POST", "/v1.41/services/web/update", 500, svc["Spec"], params=params)
    assert message == "rpc error: code = Unknown desc = update out of sequence"


@pytest.mark.parametrize("version", ["", "abc", "-1", "18446744073709551616"])
async def test_an_unparseable_version_is_a_400(h: Harness, version: str) -> None:
    await h.create()
    message = await h.error("POST", "/v1.41/services/web/update", 400, SPEC, params={"version": version})
    assert message.startswith(f"invalid service version '{version}'")


async def test_rollback_restores_the_previous_spec(h: Harness) -> None:
    await h.create()
    message = (await h.update("web", SPEC, 400, rollback="previous"))["message"]
    assert message.startswith("rpc error: code = FailedPrecondition desc = service ") and "previous spec" in message
    scaled = {**SPEC, "Mode": {"Replicated": {"Replicas": 4}}}
    await h.update("web", scaled)
    await h.update("web", scaled, rollback="previous")
    svc = await h.service("web")
    assert svc["Spec"]["Mode"]["Replicated"]["Replicas"] == 1
    assert svc["PreviousSpec"]["Mode"]["Replicated"]["Replicas"] == 4
    assert svc["UpdateStatus"]["State"] == "rollback_started"


async def test_changing_the_mode_is_not_allowed(h: Harness) -> None:
    await h.create()
    message = (await h.update("web", {**SPEC, "Mode": {"Global": {}}}, 501))["message"]
    assert message == "rpc error: code = Unimplemented desc = service mode change is not allowed"


async def test_rename_keeps_names_unique(h: Harness) -> None:
    await h.create(Name="web")
    await h.create(Name="api")
    assert "service api already exists" in (await h.update("web", {**SPEC, "Name": "api"}, 409))["message"]
    await h.update("web", {**SPEC, "Name": "front"})
    assert (await h.service("front"))["Spec"]["Name"] == "front"
    await h.create(Name="web")


async def test_remove_answers_200_with_an_empty_body_then_404(h: Harness) -> None:
    await h.create()
    response = await h.client.delete("/v1.41/services/web")
    assert response.status == 200 and await response.read() == b""
    assert await h.error("DELETE", "/v1.41/services/web", 404) == "service web not found"
    assert await h.call("GET", "/v1.41/services") == []


async def test_logs_need_a_nats_connection_and_unknown_objects_are_404(h: Harness) -> None:
    await h.create()
    assert "no NATS connection" in await h.error("GET", "/v1.41/services/web/logs?stdout=1", 501)
    assert await h.error("GET", "/v1.41/services/nope/logs", 404) == "service nope not found"
    assert await h.error("GET", "/v1.41/tasks/nope/logs", 404) == "task nope not found"


# -- tasks ---------------------------------------------------------------------------------------


async def test_tasks_of_a_service_by_name_with_what_the_cli_dereferences(h: Harness) -> None:
    node = await h.plane.join("n1")
    service_id = await h.create(Mode={"Replicated": {"Replicas": 2}})
    await h.plane.run_service(service_id, [node])
    params = {"filters": json.dumps({"service": {"web": True}})}
    tasks = await h.call("GET", "/v1.41/tasks", params=params)
    assert sorted(t["Slot"] for t in tasks) == [1, 2]
    for task in tasks:
        assert task["Spec"]["ContainerSpec"]["Image"] == "busybox:latest"
        assert (task["ServiceID"], task["NodeID"], task["DesiredState"]) == (service_id, node, "running")
        assert task["Status"]["State"] == "running" and task["Status"]["Timestamp"] and task["CreatedAt"]


async def test_task_filters(h: Harness) -> None:
    n1, n2 = await h.plane.join("n1"), await h.plane.join("n2")
    service_id = await h.create(Mode={"Replicated": {"Replicas": 2}})
    t1, t2 = await h.plane.run_service(service_id, [n1, n2])

    async def ids(filters: Json, status: int = 200) -> Json:
        tasks = await h.call("GET", "/v1.41/tasks", status, params={"filters": json.dumps(filters)})
        return sorted(t["ID"] for t in tasks) if status == 200 else tasks["message"]

    assert await ids({"node": {"n2": True}}) == [t2]
    assert await ids({"id": {t1[:8]: True}}) == [t1]
    assert await ids({"name": {"web.1.": True}}) == [t1]
    assert await ids({"desired-state": {"running": True}}) == sorted([t1, t2])
    assert await ids({"desired-state": {"shutdown": True}}) == []
    assert await ids({"desired-state": {"sideways": True}}, 400) == "Invalid desired-state filter: 'sideways'"
    assert await ids({"service": {"nosuch": True}}, 404) == "service nosuch not found"
    assert await ids({"_up-to-date": {"true": True}, "service": {service_id: True}}) == sorted([t1, t2])
    await h.update("web", {**SPEC, "Mode": {"Replicated": {"Replicas": 5}}, "Labels": {"x": "y"}})
    assert await ids({"_up-to-date": {"true": True}, "service": {service_id: True}}) == sorted([t1, t2])
    new_image = {**SPEC, "TaskTemplate": {**SPEC["TaskTemplate"], "ContainerSpec": {"Image": "busybox:1.36"}}}
    await h.update("web", {**new_image, "Mode": {"Replicated": {"Replicas": 2}}})
    assert await ids({"_up-to-date": {"true": True}, "service": {service_id: True}}) == []


async def test_a_task_without_a_container_spec_still_has_one_on_the_wire(h: Harness) -> None:
    service_id = await h.create()
    await h.plane.append(TaskCreated(task=Task(id="bare", service_id=service_id, slot=1)))
    task = await h.call("GET", "/v1.41/tasks/bare")
    assert task["Spec"]["ContainerSpec"] == {}


async def test_task_inspect_by_prefix_and_404(h: Harness) -> None:
    service_id = await h.create()
    [task_id] = await h.plane.run_service(service_id, [await h.plane.join("n1")])
    assert (await h.call("GET", f"/v1.41/tasks/{task_id[:10]}"))["ID"] == task_id
    assert await h.error("GET", "/v1.41/tasks/nope", 404) == "task nope not found"


# -- nodes ---------------------------------------------------------------------------------------


async def test_nodes_show_role_availability_and_manager_status(h: Harness) -> None:
    manager = await h.plane.join("m1", role="manager")
    worker = await h.plane.join("w1")
    nodes = {n["ID"]: n for n in await h.call("GET", "/v1.41/nodes")}
    assert nodes[manager]["Spec"] == {"Name": None, "Labels": {}, "Role": "manager", "Availability": "active"}
    assert nodes[manager]["ManagerStatus"] == {"Leader": True, "Reachability": "reachable", "Addr": "10.0.0.1:2377"}
    assert nodes[worker]["Spec"]["Role"] == "worker" and nodes[worker]["ManagerStatus"] is None
    assert nodes[worker]["Description"]["Hostname"] == "w1" and nodes[worker]["Status"]["State"] == "ready"


async def test_node_filters_and_lookup(h: Harness) -> None:
    manager = await h.plane.join("m1", role="manager")
    await h.plane.join("w1")
    params = {"filters": json.dumps({"role": {"manager": True}})}
    assert [n["ID"] for n in await h.call("GET", "/v1.41/nodes", params=params)] == [manager]
    bad_role = {"filters": json.dumps({"role": {"boss": True}})}
    assert await h.error("GET", "/v1.41/nodes", 400, params=bad_role) == "Invalid role filter: 'boss'"
    assert (await h.call("GET", "/v1.41/nodes/m1"))["ID"] == manager
    assert (await h.call("GET", f"/v1.41/nodes/{manager[:7]}"))["ID"] == manager
    assert await h.error("GET", "/v1.41/nodes/self", 404) == "node self not found"


async def test_node_update_with_version(h: Harness) -> None:
    node_id = await h.plane.join("w1")
    node = await h.call("GET", f"/v1.41/nodes/{node_id}")
    params = {"version": str(node["Version"]["Index"])}
    spec = {"Labels": {"dc": "east"}, "Role": "worker", "Availability": "drain"}
    response = await h.client.post(f"/v1.41/nodes/{node_id}/update", json=spec, params=params)
    assert response.status == 200 and await response.read() == b""
    assert (await h.call("GET", f"/v1.41/nodes/{node_id}"))["Spec"] == {"Name": None, **spec}
    stale = await h.error("POST", f"/v1.41/nodes/{node_id}/update", 500, spec, params=params)
    assert stale == "rpc error: code = Unknown desc = update out of sequence"


async def test_node_update_refuses_bad_values_and_the_last_manager_demotion(h: Harness) -> None:
    manager = await h.plane.join("m1", role="manager")
    params = {"version": str((await h.call("GET", f"/v1.41/nodes/{manager}"))["Version"]["Index"])}
    bad = {"Role": "manager", "Availability": "asleep"}
    assert await h.error("POST", f"/v1.41/nodes/{manager}/update", 400, bad, params=params) == (
        "invalid Availability: 'asleep'")
    demote = {"Labels": {}, "Role": "worker", "Availability": "active"}
    assert await h.error("POST", f"/v1.41/nodes/{manager}/update", 400, demote, params=params) == (
        "rpc error: code = FailedPrecondition desc = attempting to demote the last manager of the swarm")


async def test_node_removal_rules(h: Harness) -> None:
    manager = await h.plane.join("m1", role="manager")
    worker = await h.plane.join("w1")
    assert "It must be demoted to worker before removal" in await h.error(
        "DELETE", f"/v1.41/nodes/{manager}", 400, params={"force": "true"})
    assert await h.error("DELETE", f"/v1.41/nodes/{worker}", 400) == (
        f"rpc error: code = FailedPrecondition desc = node {worker} is not down and can't be removed")
    await h.call("DELETE", f"/v1.41/nodes/{worker}", params={"force": "true"})
    assert await h.error("GET", f"/v1.41/nodes/{worker}", 404) == f"node {worker} not found"


# -- errors, metrics, tracing --------------------------------------------------------------------


async def test_unknown_paths_and_methods_are_json_errors(h: Harness) -> None:
    assert await h.error("GET", "/v1.41/nothing", 404) == "page not found"
    assert await h.error("PUT", "/v1.41/services", 405)


async def test_an_unexpected_failure_is_a_logged_500_and_the_server_lives_on(
    h: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(routes_system, "version_view", broken)
    assert "internal error" in await h.error("GET", "/v1.41/version", 500)
    assert any("boom" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    assert (await h.client.get("/_ping")).status == 200


async def test_an_unavailable_log_is_a_503(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    async def down(batch: list[Append]) -> list[AppendResult]:
        raise LogUnavailable("no quorum")

    monkeypatch.setattr(h.log, "append", down)
    assert "event log is unavailable" in await h.error("POST", "/v1.41/services/create", 503, SPEC)


async def test_metrics_count_requests_by_route_template(h: Harness) -> None:
    await h.client.get("/v1.41/services/abc")
    text = await (await h.client.get("/metrics")).text()
    assert 'shoal_api_requests_total{method="GET",route="/services/{id}",status="404"}' in text
    assert "shoal_api_request_duration_seconds_bucket" in text


async def test_the_request_trace_travels_on_the_appended_event(h: Harness) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    await h.call("POST", "/v1.41/services/create", 201, SPEC, headers=headers)
    entry = h.log.entries[-1]
    assert isinstance(decode(entry.data).event, ServiceCreated)
    assert entry.headers is not None and trace_id in entry.headers["traceparent"]
    assert decode(entry.data).actor == "api:anonymous"




async def test_the_openapi_document_describes_exactly_the_routes_served(h: Harness) -> None:
    doc = await h.call("GET", "/shoal/openapi.json")
    assert doc["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, operations in doc["paths"].items() for method in operations}
    assert documented == {(r.method, openapi_path(r.path)) for r in ALL_ROUTES}
    text = json.dumps(doc)
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', text))
    assert refs and refs <= set(doc["components"]["schemas"])
    assert "ServiceSpec" in refs and "ErrorBody" in refs
