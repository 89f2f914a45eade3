"""Gateways on a real JetStream stream: compare-and-set across processes, snapshots, trace headers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from schemas.codec import decode
from schemas.events import ClusterCreated, ServiceUpdated
from services.api.app import make_app
from services.api.bootstrap import build
from services.api.context import Api
from services.kernel.jetstream import JetStreamLog
from services.kernel.snapshot import ObjectStoreSnapshots, SnapshotStore

pytestmark = pytest.mark.integration

SPEC: dict[str, Any] = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}},
                        "Mode": {"Replicated": {}}}


@asynccontextmanager
async def gateway(jslog: JetStreamLog, snapshots: SnapshotStore | None = None) -> AsyncIterator[
        tuple[Api, TestClient[Any, Any]]]:
    api = await build(jslog, snapshots)
    async with TestClient(TestServer(make_app(api))) as client:
        yield api, client
    await api.projection.stop()


async def entries(jslog: JetStreamLog) -> list[Any]:
    last = await jslog.last_seq()
    found = [await jslog.get(seq) for seq in range(1, last + 1)]
    return [e for e in found if e is not None]


async def test_gateways_started_together_create_one_cluster(jslog: JetStreamLog) -> None:
    apis = await asyncio.gather(*(build(jslog) for _ in range(3)))
    created = [e for e in await entries(jslog) if isinstance(decode(e.data).event, ClusterCreated)]
    assert len(created) == 1
    assert len({a.state.cluster.id for a in apis if a.state.cluster is not None}) == 1
    for api in apis:
        await api.projection.stop()


async def test_one_name_created_concurrently_on_two_gateways_is_admitted_once(jslog: JetStreamLog) -> None:
    async with gateway(jslog) as (api, a), gateway(jslog) as (_, b):
        responses = await asyncio.gather(*(c.post("/v1.41/services/create", json=SPEC) for c in (a, b) * 3))
        assert sorted(r.status for r in responses) == [201] + [409] * 5
        await api.projection.wait_for(await jslog.last_seq())
        assert [s.spec.name for s in api.state.services.values()] == ["web"]


async def test_an_update_racing_another_gateway_is_out_of_sequence(jslog: JetStreamLog) -> None:
    async with gateway(jslog) as (_, a), gateway(jslog) as (b_api, b):
        await a.post("/v1.41/services/create", json=SPEC)
        svc = await (await a.get("/v1.41/services/web")).json()
        await b_api.projection.wait_for(svc["Version"]["Index"])
        params = {"version": str(svc["Version"]["Index"])}
        scaled = {**SPEC, "Mode": {"Replicated": {"Replicas": 2}}}
        results = await asyncio.gather(a.post("/v1.41/services/web/update", json=scaled, params=params),
                                       b.post("/v1.41/services/web/update", json=scaled, params=params))
        assert sorted(r.status for r in results) == [200, 500]
        [loser] = [r for r in results if r.status == 500]
        assert (await loser.json())["message"] == "rpc error: code = Unknown desc = update out of sequence"
        updates = [e for e in await entries(jslog) if isinstance(decode(e.data).event, ServiceUpdated)]
        assert len(updates) == 1


async def test_a_gateway_restarts_from_its_snapshot(jslog: JetStreamLog) -> None:
    store = ObjectStoreSnapshots(jslog.js, jslog.stream)
    async with gateway(jslog, store) as (api, client):
        assert (await client.post("/v1.41/services/create", json=SPEC)).status == 201
        await api.projection.save_snapshot()
    async with gateway(jslog, store) as (resumed, client):
        assert sum(resumed.state.stats.applied.values()) == 0
        assert (await client.get("/v1.41/services/web")).status == 200


async def test_the_trace_context_is_a_header_of_the_appended_entry(jslog: JetStreamLog) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    async with gateway(jslog) as (_, client):
        headers = {"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
        assert (await client.post("/v1.41/services/create", json=SPEC, headers=headers)).status == 201
    last = (await entries(jslog))[-1]
    assert trace_id in (last.headers or {}).get("traceparent", "")


async def test_the_object_store_lists_and_deletes_snapshots_by_name(jslog: JetStreamLog) -> None:
    """What checkpoint pruning relies on, on a real object store."""
    store = ObjectStoreSnapshots(jslog.js, jslog.stream)
    assert await store.names("state-at-") == []
    for name in ("state-at-10", "state-at-20", "orchestrator"):
        await store.save(name, name.encode())
    assert sorted(await store.names("state-at-")) == ["state-at-10", "state-at-20"]
    await store.delete("state-at-10")
    await store.delete("state-at-10")  # absent already: not an error
    assert await store.names("state-at-") == ["state-at-20"]
    assert await store.load("state-at-10") is None and await store.load("orchestrator") == b"orchestrator"
