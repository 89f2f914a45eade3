"""Losing JetStream servers under a steady stream of writes (3 managers, sim executor).

One of three: no write the api acknowledged is missing from the log afterwards (the client's own
record is checked against the log), writes go on, and the server rejoins and catches up. Two of
three: no quorum, so writes fail with a clear 503 while reads still answer; one back, writes resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from schemas.codec import decode
from schemas.events import ServiceUpdated
from services.kernel.jetstream import JetStreamLog, connect
from tests.cluster import LocalCluster, local_cluster
from tests.fault.harness import call, converge, create_service, eventually, kill_and_hold, ok, scale, update_service

pytestmark = [pytest.mark.fault, pytest.mark.timeout(240)]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with local_cluster(tmp_path, agents=1, executor="sim", managers=3) as c:
        yield c


class Updates:
    """Updates one after another, each setting label `n`; remembers which ones the api acknowledged."""

    def __init__(self, api: str, service_id: str) -> None:
        self.api = api
        self.service_id = service_id
        self.acked: list[int] = []
        self.refused = 0
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        n = 0
        while True:
            n += 1
            try:
                status = await update_service(self.api, self.service_id, Labels={"n": str(n)})
            except (aiohttp.ClientError, AssertionError, TimeoutError):
                status = 0
            if status == 200:
                self.acked.append(n)
            else:
                self.refused += 1
                await asyncio.sleep(0.2)

    async def more(self, count: int, what: str) -> None:
        target = len(self.acked) + count

        async def check() -> bool:
            return len(self.acked) >= target

        await eventually(check, 90, f"{count} more acknowledged updates {what}")

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _logged_labels(cluster: LocalCluster, service_id: str) -> set[int]:
    nc = await connect(cluster.options.nats_urls, "auditor")
    try:
        log = JetStreamLog(nc, "SHOAL")
        out = set()
        for seq in range(1, await log.last_seq() + 1):
            entry = await log.get(seq)
            ev = decode(entry.data).event if entry is not None else None
            if isinstance(ev, ServiceUpdated) and ev.service_id == service_id and ev.spec.labels:
                out.add(int(ev.spec.labels["n"]))
        return out
    finally:
        await nc.close()


async def _stream_leader(cluster: LocalCluster) -> str:
    nc = await connect(cluster.options.nats_urls, "auditor")
    try:
        info = json.loads((await nc.request("$JS.API.STREAM.INFO.SHOAL", b"", timeout=5)).data)
        return f"nats-{info['cluster']['leader'].rsplit('-', 1)[1]}"
    finally:
        await nc.close()


async def _server_last_seq(cluster: LocalCluster, name: str) -> int:
    """The stream's last sequence as this one server holds it (its own monitoring endpoint)."""
    port = cluster.options.nats_monitor_port + int(name.rsplit("-", 1)[1]) - 1
    status, jsz = await call(f"http://127.0.0.1:{port}", "GET", "/jsz?streams=true")
    assert status == 200, jsz
    for account in jsz.get("account_details", []):
        for stream in account.get("stream_detail", []):
            if stream["name"] == "SHOAL":
                return int(stream["state"]["last_seq"])
    return 0


async def test_kill_one_of_three_servers_during_updates(cluster: LocalCluster) -> None:
    api = cluster.api_url
    service = await create_service(api, "web", 2)
    updates = Updates(api, service)
    try:
        await updates.more(5, "before the kill")
        victim = await _stream_leader(cluster)  # the worst one to lose
        await kill_and_hold(cluster.supervisor, victim)
        await updates.more(10, "with one server down")
        await scale(api, service, 4)  # loops and agents carry on too, whichever server they used
        await converge(api, "web", 4)
        await cluster.start_process(victim)
        await updates.more(5, "after it came back")
    finally:
        await updates.stop()
    logged = await _logged_labels(cluster, service)
    missing = sorted(set(updates.acked) - logged)
    assert not missing, f"acknowledged updates missing from the log: {missing}"

    async def caught_up() -> bool:
        target = max([await _server_last_seq(cluster, f"nats-{i}") for i in (1, 2, 3)])
        return await _server_last_seq(cluster, victim) == target

    await eventually(caught_up, 60, f"{victim} holds the whole stream again")


async def test_kill_two_of_three_servers_writes_refused_reads_answer(cluster: LocalCluster) -> None:
    api = cluster.api_url
    service = await create_service(api, "web", 2)
    await kill_and_hold(cluster.supervisor, "nats-2")
    await kill_and_hold(cluster.supervisor, "nats-3")
    status, body = await call(api, "POST", "/services/create",
                              {"Name": "other", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}})
    assert status == 503, body
    assert "unavailable" in body["message"]
    services = await ok(api, "GET", "/services")
    assert [s["ID"] for s in services] == [service]
    await cluster.start_process("nats-2")

    async def writes_again() -> bool:
        return await update_service(api, service, Labels={"back": "yes"}) == 200

    await eventually(writes_again, 90, "writes accepted again with two servers of three")


async def _server_of(cluster: LocalCluster, client: str) -> str:
    """Which nats-server a process named `client` is connected to (each server's /connz)."""
    for i in range(1, cluster.options.managers + 1):
        port = cluster.options.nats_monitor_port + i - 1
        status, connz = await call(f"http://127.0.0.1:{port}", "GET", "/connz?limit=1024")
        assert status == 200, connz
        if any(c.get("name") == client for c in connz.get("connections", [])):
            return f"nats-{i}"
    raise AssertionError(f"no server has a connection named {client}")


async def test_an_agent_whose_server_dies_carries_on_through_another(cluster: LocalCluster) -> None:
    api = cluster.api_url
    service = await create_service(api, "web", 2)
    await converge(api, "web", 2)
    await kill_and_hold(cluster.supervisor, await _server_of(cluster, "agent"))
    await scale(api, service, 5)  # new tasks run only if the agent hears of them and reports
    await converge(api, "web", 5)
