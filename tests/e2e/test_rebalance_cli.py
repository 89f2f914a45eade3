"""Rebalance end to end, driven by the real docker CLI on a real cluster (separate processes, `process`
executor): a node comes back from drain and an opted-in service spreads onto it; one without the
label stays where it is, as in Swarm."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cluster import LocalCluster, local_cluster
from tests.e2e.cli import docker, eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with local_cluster(tmp_path, agents=2, executor="process") as c:
        yield c


async def _spread(host: str, service: str) -> Counter[str]:
    out = await docker(host, "service", "ps", service, "--filter", "desired-state=running",
                       "--format", "{{.Node}} {{.CurrentState}}")
    return Counter(line.split()[0] for line in out.splitlines() if line.split()[1:2] == ["Running"])


async def test_a_node_back_from_drain_gets_half_of_an_opted_in_service(cluster: LocalCluster) -> None:
    host = cluster.docker_host

    async def two_ready() -> bool:
        return (await docker(host, "node", "ls", "--format", "{{.Status}}")).split() == ["Ready", "Ready"]

    await eventually(two_ready, 30, "two ready nodes")
    first, second = sorted((await docker(host, "node", "ls", "--format", "{{.Hostname}}")).split())
    await docker(host, "node", "update", "--availability", "drain", second)
    for name, labels in (("even", ["--label", "shoal.rebalance=true"]), ("plain", [])):
        await docker(host, "service", "create", "--detach", "--name", name, "--replicas", "4", *labels,
                     "busybox", "sleep", "600")

    async def all_on_first() -> bool:
        return [await _spread(host, s) for s in ("even", "plain")] == [Counter({first: 4})] * 2

    await eventually(all_on_first, 40, f"both services running 4 tasks on {first}")
    await docker(host, "node", "update", "--availability", "active", second)

    async def evened() -> bool:
        return await _spread(host, "even") == Counter({first: 2, second: 2})

    await eventually(evened, 60, f"`even` spread 2 and 2: {await _spread(host, 'even')}")
    assert await _spread(host, "plain") == Counter({first: 4})
    ps = await docker(host, "service", "ps", "even", "--format", "{{.DesiredState}}")
    assert ps.split().count("Shutdown") == 2
