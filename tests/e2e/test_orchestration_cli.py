"""The commands of docs/orchestration/ as an operator types them: the real docker CLI against a real
cluster of separate processes whose three agents run `sim` tasks. A task told `SHOAL_SIM_EXIT=1` in
its environment exits with code 1 as soon as it starts, which is how an update is made to fail."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.cluster import LocalCluster, local_cluster
from tests.e2e.cli import api_get, docker, eventually, filters, running_tasks

pytestmark = pytest.mark.e2e


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with local_cluster(tmp_path, agents=3, executor="sim") as c:
        yield c


async def _update_status(c: LocalCluster, service: str) -> dict[str, str]:
    out = await docker(c.docker_host, "service", "inspect", "--format", "{{json .UpdateStatus}}", service)
    status: dict[str, str] | None = json.loads(out)
    return status or {}


async def _until_state(c: LocalCluster, service: str, state: str) -> dict[str, str]:
    async def reached() -> bool:
        return (await _update_status(c, service)).get("State") == state

    await eventually(reached, 60, f"{service} UpdateStatus {state}; it is {await _update_status(c, service)}")
    return await _update_status(c, service)


async def _until_running(c: LocalCluster, service: str, count: int) -> None:
    async def reached() -> bool:
        return len(await running_tasks(c.api_url, service)) == count

    await eventually(reached, 60, f"{count} running tasks of {service}")


async def test_update_failure_pause_resume_rollback_and_drain_with_the_docker_cli(cluster: LocalCluster) -> None:
    host = cluster.docker_host

    async def three_nodes() -> bool:
        return (await docker(host, "node", "ls", "--format", "{{.Status}}")).split() == ["Ready"] * 3

    await eventually(three_nodes, 60, "three ready nodes")
    await docker(host, "service", "create", "--detach", "--name", "web", "--replicas", "4",
                 "--restart-delay", "1s", "--update-monitor", "1s", "--rollback-monitor", "1s",
                 "busybox", "sleep", "600")
    await _until_running(cluster, "web", 4)

    await docker(host, "service", "update", "--detach", "--env-add", "SHOAL_SIM_EXIT=1", "web")
    paused = await _until_state(cluster, "web", "paused")
    assert paused["Message"].startswith("update paused due to failure or early termination of task ")
    await docker(host, "service", "update", "--detach", "--env-rm", "SHOAL_SIM_EXIT", "web")
    done = await _until_state(cluster, "web", "completed")
    assert done["Message"] == "update completed" and done["CompletedAt"]
    assert "UpdateStatus:" in await docker(host, "service", "inspect", "--pretty", "web")
    await _until_running(cluster, "web", 4)

    await docker(host, "service", "update", "--detach", "--update-failure-action", "rollback",
                 "--env-add", "SHOAL_SIM_EXIT=1", "web")
    rolled_back = await _until_state(cluster, "web", "rollback_completed")
    assert rolled_back["Message"] == "rollback completed"
    env = await docker(host, "service", "inspect", "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Env}}", "web")
    assert "SHOAL_SIM_EXIT=1" not in env
    await _until_running(cluster, "web", 4)

    node = (await docker(host, "node", "ls", "--format", "{{.Hostname}}")).split()[0]
    await docker(host, "node", "update", "--availability", "drain", node)

    async def drained() -> bool:
        running = await running_tasks(cluster.api_url, "web")
        hosts = await docker(host, "service", "ps", "--filter", "desired-state=running", "--format", "{{.Node}}",
                             "web")
        return len(running) == 4 and node not in hosts.split()

    await eventually(drained, 60, f"4 tasks running off {node}")


async def test_a_stopped_agent_s_node_goes_down_its_tasks_move_and_it_comes_back(cluster: LocalCluster) -> None:
    host = cluster.docker_host

    async def statuses() -> dict[str, str]:
        lines = (await docker(host, "node", "ls", "--format", "{{.Hostname}} {{.Status}}")).splitlines()
        return dict(line.split() for line in lines)

    async def all_ready() -> bool:
        return list((await statuses()).values()) == ["Ready"] * 3

    await eventually(all_ready, 60, "three ready nodes")
    await docker(host, "service", "create", "--detach", "--name", "web", "--replicas", "6", "--restart-delay", "1s",
                 "busybox", "sleep", "600")
    await _until_running(cluster, "web", 6)
    await cluster.stop_process("agent-3")

    async def one_down() -> bool:
        return sorted((await statuses()).values()) == ["Down", "Ready", "Ready"]

    await eventually(one_down, 60, f"one node down: {await statuses()}")
    down = next(name for name, status in (await statuses()).items() if status == "Down")

    async def moved() -> bool:
        hosts = await docker(host, "service", "ps", "--filter", "desired-state=running", "--format", "{{.Node}}",
                             "web")
        return len(await running_tasks(cluster.api_url, "web")) == 6 and down not in hosts.split()

    await eventually(moved, 60, f"6 tasks running off {down}")
    await cluster.start_process("agent-3")
    await eventually(all_ready, 60, f"{down} ready again")

    async def one_running_per_slot() -> bool:
        tasks = await api_get(cluster.api_url, f"/tasks?filters={quote(filters(service='web'))}")
        slots = sorted(t["Slot"] for t in tasks if t["Status"]["State"] == "running")
        return slots == [1, 2, 3, 4, 5, 6]

    await eventually(one_running_per_slot, 60, "no slot with two running tasks after the node came back")
