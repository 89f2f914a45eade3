"""Issue 2 end to end: a real cluster of separate processes (nats-server, api, orchestrator,
scheduler, two agents with the `process` executor) driven by the real docker CLI.

Tasks really run as local processes; killing one gets it replaced; scaling and removal converge;
and `kill -9` of any Shoal process, then its restart, leaves the same state with no duplicate task.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import LocalCluster, local_cluster
from tests.e2e.cli import api_get, docker, eventually, running_tasks, service_tasks

pytestmark = pytest.mark.e2e


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with local_cluster(tmp_path, agents=2, executor="process") as c:
        yield c


async def _converged(c: LocalCluster, service: str, replicas: int) -> None:
    async def check() -> bool:
        running = await running_tasks(c.api_url, service)
        slots = Counter(t["Slot"] for t in running)
        return len(running) == replicas and all(n == 1 for n in slots.values())

    await eventually(check, 40, f"{service} at {replicas} running tasks, one per slot; "
                                f"tasks: {await service_tasks(c.api_url, service)}\nagent-1:\n{c.log('agent-1')}")


async def _listed_as(host: str, replicas: str) -> bool:
    """A stopped process is reported a moment after it died: the REPLICAS column follows the reports."""
    return replicas in await docker(host, "service", "ls")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_docker_cli_drives_a_service_through_its_life(cluster: LocalCluster) -> None:
    host = cluster.docker_host
    await eventually(lambda: _nodes_ready(host, 2), 30, "two ready nodes in `docker node ls`")

    service_id = (await docker(host, "service", "create", "--detach", "--name", "web", "--replicas", "3",
                               "busybox", "sleep", "600")).strip()
    assert len(service_id) == 25
    await _converged(cluster, "web", 3)
    listing = await docker(host, "service", "ls")
    assert "web" in listing and "3/3" in listing
    ps = await docker(host, "service", "ps", "web")
    assert all(f"web.{slot}" in ps for slot in (1, 2, 3)) and ps.count("Running") >= 3

    victim = (await running_tasks(cluster.api_url, "web"))[0]
    pid = victim["Status"]["ContainerStatus"]["PID"]
    assert pid and _alive(pid)
    os.kill(pid, signal.SIGKILL)
    await eventually(lambda: _replaced(cluster, victim), 30, f"task {victim['ID']} replaced in its slot")
    await _converged(cluster, "web", 3)
    assert " \\_ web." in await docker(host, "service", "ps", "web")

    await docker(host, "service", "scale", "--detach", "web=5")
    await _converged(cluster, "web", 5)
    pids = [t["Status"]["ContainerStatus"]["PID"] for t in await running_tasks(cluster.api_url, "web")]
    await docker(host, "service", "scale", "--detach", "web=0")
    await _converged(cluster, "web", 0)
    await eventually(lambda: _none_alive(pids), 30, "every task process stopped after scaling to 0")
    await eventually(lambda: _listed_as(host, "0/0"), 30, "service ls shows 0/0 once the agents reported")

    await docker(host, "service", "rm", "web")
    assert "web" not in await docker(host, "service", "ls")
    await eventually(lambda: _no_tasks(cluster, service_id), 30, "the removed service's tasks deleted")


async def test_kill_9_of_any_process_then_restart_converges_without_duplicates(cluster: LocalCluster) -> None:
    host = cluster.docker_host
    await eventually(lambda: _nodes_ready(host, 2), 30, "two ready nodes")
    await docker(host, "service", "create", "--detach", "--name", "app", "--replicas", "4", "busybox", "sleep", "600")
    await _converged(cluster, "app", 4)
    before = {t["ID"] for t in await running_tasks(cluster.api_url, "app")}
    for name in ("orchestrator", "scheduler", "api", "agent-1", "agent-2"):
        await cluster.kill(name)
        await cluster.wait_api()
        await _converged(cluster, "app", 4)
    after = {t["ID"] for t in await running_tasks(cluster.api_url, "app")}
    assert after == before, "a restarted process must adopt running tasks, not replace them"
    await docker(host, "service", "scale", "--detach", "app=6")
    await cluster.kill("orchestrator")
    await _converged(cluster, "app", 6)


async def _nodes_ready(host: str, count: int) -> bool:
    out = await docker(host, "node", "ls", check=False)
    return out.count("Ready") == count


async def _replaced(c: LocalCluster, victim: dict[str, Any]) -> bool:
    tasks = await service_tasks(c.api_url, victim["ServiceID"])
    same_slot = [t for t in tasks if t["Slot"] == victim["Slot"]]
    old = next((t for t in same_slot if t["ID"] == victim["ID"]), None)
    return old is not None and old["Status"]["State"] in ("failed", "shutdown") and any(
        t["ID"] != victim["ID"] and t["Status"]["State"] == "running" for t in same_slot)


async def _none_alive(pids: list[int]) -> bool:
    return not any(_alive(p) for p in pids)


async def _no_tasks(c: LocalCluster, service_id: str) -> bool:
    tasks: list[dict[str, Any]] = await api_get(c.api_url, "/tasks")
    return not [t for t in tasks if t["ServiceID"] == service_id]
