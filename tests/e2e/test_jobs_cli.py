"""Jobs end to end: the real docker CLI creates, watches and re-runs jobs on a real cluster (separate
processes, agents with the `process` executor, so each task is a real `sleep` that exits 0)."""

from __future__ import annotations

import json
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


async def _nodes_ready(host: str) -> bool:
    out = await docker(host, "node", "ls", "--format", "{{.Status}}")
    return out.split() == ["Ready", "Ready"]


def _replicas(listing: str, name: str) -> str:
    rows = [json.loads(line) for line in listing.splitlines() if line.strip()]
    return str(next(r["Replicas"] for r in rows if r["Name"] == name))


async def test_docker_cli_runs_a_replicated_job_to_completion_and_reruns_it_on_update(cluster: LocalCluster) -> None:
    host = cluster.docker_host
    await eventually(lambda: _nodes_ready(host), 30, "two ready nodes")
    # Not detached: the CLI's job progress display returns once 5 completions are reached.
    await docker(host, "service", "create", "--name", "batch", "--mode", "replicated-job", "--replicas", "5",
                 "--max-concurrent", "2", "busybox", "sleep", "0.3")
    listing = await docker(host, "service", "ls", "--format", "{{json .}}")
    assert _replicas(listing, "batch") == "0/0 (5/5 completed)"
    assert "replicated job" in listing
    ps = await docker(host, "service", "ps", "batch", "--format", "{{.DesiredState}} {{.CurrentState}}")
    assert [line.split()[:2] for line in ps.splitlines()] == [["Complete", "Complete"]] * 5

    await docker(host, "service", "update", "--force", "batch")
    inspect = json.loads(await docker(host, "service", "inspect", "batch"))[0]
    assert inspect["JobStatus"]["JobIteration"]["Index"] == 1
    ps = await docker(host, "service", "ps", "batch", "--format", "{{.CurrentState}}")
    assert len(ps.splitlines()) == 10 and all(line.startswith("Complete") for line in ps.splitlines())


async def test_docker_cli_runs_a_global_job_once_per_node(cluster: LocalCluster) -> None:
    host = cluster.docker_host
    await eventually(lambda: _nodes_ready(host), 30, "two ready nodes")
    await docker(host, "service", "create", "--name", "once", "--mode", "global-job", "busybox", "true")
    listing = await docker(host, "service", "ls", "--format", "{{json .}}")
    assert _replicas(listing, "once") == "0/0 (2/2 completed)"
    nodes = await docker(host, "service", "ps", "once", "--format", "{{.Node}}")
    assert sorted(nodes.split()) == sorted((await docker(host, "node", "ls", "--format", "{{.Hostname}}")).split())
