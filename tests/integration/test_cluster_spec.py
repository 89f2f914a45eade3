"""The cluster settings on a real cluster through the real docker CLI: `docker info` shows what the
orchestrator was started with, `docker swarm update --task-history-limit` changes it, and a new leader
leaves the recorded heartbeat period (and so the cluster's version) alone, and measures by it a node it
has not heard yet."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.cluster import LocalCluster, local_cluster
from tests.e2e.cli import docker, eventually
from tests.integration.test_metrics_scrape import scrape, value

pytestmark = pytest.mark.integration


@pytest.fixture
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LocalCluster]:
    monkeypatch.setenv("SHOAL_TASK_HISTORY_LIMIT", "2")
    monkeypatch.setenv("SHOAL_HEARTBEAT_GRACE", "6")
    async with local_cluster(tmp_path / "cluster", agents=1, executor="sim") as c:
        yield c


async def spec(cluster: LocalCluster) -> dict[str, object]:
    out = await docker(cluster.docker_host, "info", "--format", "{{json .Swarm.Cluster.Spec}}")
    return dict(json.loads(out))


async def test_docker_info_shows_the_settings_in_force_and_swarm_update_changes_the_limit(
        cluster: LocalCluster) -> None:
    async def recorded() -> bool:
        shown = await spec(cluster)
        return (shown["Orchestration"], shown["Dispatcher"]) == (
            {"TaskHistoryRetentionLimit": 2}, {"HeartbeatPeriod": 2_000_000_000})
    await eventually(recorded, what=lambda: f"the orchestrator's flags in docker info:\n{cluster.log('orchestrator')}")
    text = await docker(cluster.docker_host, "info")
    assert "Task History Retention Limit: 2" in text and "Heartbeat Period: 2 seconds" in text

    await docker(cluster.docker_host, "swarm", "update", "--task-history-limit", "3")
    assert (await spec(cluster))["Orchestration"] == {"TaskHistoryRetentionLimit": 3}
    with pytest.raises(AssertionError, match="agent's `--heartbeat`"):
        await docker(cluster.docker_host, "swarm", "update", "--dispatcher-heartbeat", "10s")
    assert (await spec(cluster))["Dispatcher"] == {"HeartbeatPeriod": 2_000_000_000}

    await cluster.kill("orchestrator")  # restarted with its flag, 2, which the log's 3 overrides

    async def warned() -> bool:
        return "--task-history-limit ignored" in cluster.log("orchestrator")
    await eventually(warned, what=lambda: f"the restarted orchestrator warns:\n{cluster.log('orchestrator')}")


async def test_a_new_leader_leaves_the_period_the_agents_announce_alone(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With agents on `--heartbeat 10` a restarted orchestrator leads long before it hears them: it
    must not record the 1 s default meanwhile (nor the 10 s again), which would move the cluster's
    version under a concurrent `docker swarm update`."""
    monkeypatch.setenv("SHOAL_HEARTBEAT", "10")
    async with local_cluster(tmp_path / "cluster", agents=1, executor="sim") as cluster:
        await eventually(lambda: recorded(cluster, TEN_S),
                         what=lambda: f"the agent's period:\n{cluster.log('orchestrator')}")
        version = await docker(cluster.docker_host, "info", "--format", "{{.Swarm.Cluster.Version.Index}}")

        await cluster.kill("orchestrator")

        async def leads_and_heard() -> bool:
            return await heartbeats_heard_as_leader(cluster) >= 1
        await eventually(leads_and_heard, what=lambda: f"the new orchestrator leads:\n{cluster.log('orchestrator')}")
        after = await docker(cluster.docker_host, "info", "--format", "{{.Swarm.Cluster.Version.Index}}")
        assert after == version, await entries(cluster, "ClusterSpecUpdated")
        assert await recorded(cluster, TEN_S)


async def test_a_new_leader_gives_a_node_it_has_not_heard_the_grace_of_the_recorded_period(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Agents on `--heartbeat 10`, the orchestrator killed just after it heard one: its successor leads
    seconds before the next heartbeat. It must give the node the 30 s the log's 10 s period implies, not
    the 1 s default's 3 s, which marked the node down (and replaced its tasks) at every leader change."""
    monkeypatch.setenv("SHOAL_HEARTBEAT", "10")
    async with local_cluster(tmp_path / "cluster", agents=1, executor="sim") as cluster:
        await eventually(lambda: recorded(cluster, TEN_S),
                         what=lambda: f"the agent's period:\n{cluster.log('orchestrator')}")
        heard = await heartbeats_heard_as_leader(cluster)

        async def another_heard() -> bool:
            return await heartbeats_heard_as_leader(cluster) > heard
        await eventually(another_heard, what=lambda: f"a heartbeat:\n{cluster.log('orchestrator')}")
        await cluster.kill("orchestrator")  # the next heartbeat is about 10 s away

        async def leads() -> bool:
            return await heartbeats_heard_as_leader(cluster) >= 0
        await eventually(leads, what=lambda: f"the new orchestrator leads:\n{cluster.log('orchestrator')}")
        await asyncio.sleep(8)  # past the default grace (3 s) from taking over, within the node's (30 s)
        statuses = await entries(cluster, "NodeStatusChanged")
        assert '"down"' not in statuses, statuses


TEN_S = 10_000_000_000


async def recorded(cluster: LocalCluster, period_ns: int) -> bool:
    """Whether `docker info` shows `period_ns` as the heartbeat period the log records."""
    return (await spec(cluster))["Dispatcher"] == {"HeartbeatPeriod": period_ns}


async def heartbeats_heard_as_leader(cluster: LocalCluster) -> float:
    """The heartbeats the orchestrator process has received, once it serves metrics and leads; -1 before."""
    try:
        samples = await scrape(cluster.metrics_url("orchestrator"))
    except aiohttp.ClientError:  # not serving yet
        return -1
    if value(samples, "shoal_leader", loop="orchestrator") != 1:
        return -1
    return value(samples, "shoal_heartbeats_received_total")


async def entries(cluster: LocalCluster, event_type: str) -> str:
    """The log's entries of one type, for an assertion."""
    wanted = {"filters": json.dumps({"type": [event_type]})}
    async with aiohttp.ClientSession() as session, session.get(f"{cluster.api_url}/shoal/events",
                                                               params=wanted) as resp:
        return await resp.text()
