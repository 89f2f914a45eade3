"""The cluster settings on a real cluster through the real docker CLI: `docker info` shows what the
orchestrator was started with, and `docker swarm update --task-history-limit` changes it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cluster import LocalCluster, local_cluster
from tests.e2e.cli import docker, eventually

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
    await eventually(recorded, what=f"the orchestrator's flags in docker info:\n{cluster.log('orchestrator')}")
    text = await docker(cluster.docker_host, "info")
    assert "Task History Retention Limit: 2" in text and "Heartbeat Period: 2 seconds" in text

    await docker(cluster.docker_host, "swarm", "update", "--task-history-limit", "3")
    assert (await spec(cluster))["Orchestration"] == {"TaskHistoryRetentionLimit": 3}
    with pytest.raises(AssertionError, match="agent's `--heartbeat`"):
        await docker(cluster.docker_host, "swarm", "update", "--dispatcher-heartbeat", "10s")
    assert (await spec(cluster))["Dispatcher"] == {"HeartbeatPeriod": 2_000_000_000}
