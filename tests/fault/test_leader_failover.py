"""A leader killed or frozen in the middle of work: a standby takes over, the work ends exactly as
asked, and nothing the old leader does afterwards lands (sim executor, 3 managers)."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cluster import LocalCluster, local_cluster
from tests.e2e.cli import docker
from tests.fault.harness import converge, create_service, eventually, leader, metric, scale, tasks

pytestmark = [pytest.mark.fault, pytest.mark.timeout(300)]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with local_cluster(tmp_path, agents=4, executor="sim", managers=3) as c:
        yield c


@pytest.mark.parametrize("loop", ["orchestrator", "scheduler"])
async def test_kill_the_leader_during_a_scale_from_10_to_200(cluster: LocalCluster, loop: str) -> None:
    api = cluster.api_url
    service = await create_service(api, "web", 10)
    await converge(api, "web", 10)
    before = await leader(cluster, loop)
    assert before.name, f"the {loop} leader is none of our processes"
    await scale(api, service, 200)
    await cluster.kill(before.name)  # kill -9 right after the scale is acknowledged
    after = await leader(cluster, loop, newer_than=before.term)
    assert after.pid != before.pid
    await converge(api, "web", 200)
    assert len({t["ID"] for t in await tasks(api, "web")}) >= 200


async def test_a_frozen_leader_is_fenced_and_stands_by_when_it_thaws(cluster: LocalCluster) -> None:
    api = cluster.api_url
    service = await create_service(api, "web", 5)
    await converge(api, "web", 5)
    before = await leader(cluster, "orchestrator")
    os.kill(before.pid, signal.SIGSTOP)  # longer than its lease: a standby takes over
    try:
        after = await leader(cluster, "orchestrator", newer_than=before.term)
        await scale(api, service, 20)
        await converge(api, "web", 20)
    finally:
        os.kill(before.pid, signal.SIGCONT)
    assert after.pid != before.pid

    async def stood_down() -> bool:
        return await metric(cluster.metrics_url(before.name), 'shoal_leader{loop="orchestrator"}') == 0

    await eventually(stood_down, 30, "the thawed ex-leader reports itself a standby")
    await scale(api, service, 7)
    await converge(api, "web", 7)
    assert (await leader(cluster, "orchestrator")).pid == after.pid
    for addr in cluster.options.api_addrs:  # the docker CLI can use any api instance
        # each answers from its own projection: one that did not take the write may be a few entries behind
        async def shows_seven(addr: str = addr) -> bool:
            return "7/7" in await docker(f"tcp://{addr}", "service", "ls")

        await eventually(shows_seven, 30, f"docker service ls through {addr} shows 7/7")
