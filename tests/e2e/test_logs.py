"""`docker service logs` end to end: the real docker CLI against a whole cluster of separate processes,
with the `process` executor (two agents) and with the `docker` executor on the real engine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.cluster import LocalCluster, local_cluster
from tests.e2e.cli import api_get, docker, docker_binary, eventually, filters

pytestmark = pytest.mark.e2e

# Prints its first lines, then one `tick` each time a file named `go` appears in its directory.
TICKER = "echo one; echo two; while true; do if [ -f go ]; then rm go; echo tick; fi; sleep 0.1; done"


async def _running(c: LocalCluster, service: str) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = await api_get(c.api_url, f"/tasks?filters={quote(filters(service=service))}")
    return [t for t in tasks if t["Status"]["State"] == "running"]


async def _nodes(c: LocalCluster) -> dict[str, str]:
    return {n["ID"]: n["Description"]["Hostname"] for n in await api_get(c.api_url, "/nodes")}


def _prefix(task: dict[str, Any], hostname: str, service: str = "web") -> str:
    return f"{service}.{task['Slot']}.{task['ID'][:12]}@{hostname}"


async def _log_streams(c: LocalCluster, agent: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(c.metrics_url(agent)) as resp:
        text = await resp.text()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("shoal_agent_log_streams "))


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with local_cluster(tmp_path, agents=2, executor="process") as c:
        yield c


async def test_service_logs_with_the_process_executor(cluster: LocalCluster) -> None:
    host = cluster.docker_host
    await docker(host, "service", "create", "--detach", "--name", "web", "--replicas", "3", "busybox",
                 "sh", "-c", TICKER)
    await eventually(lambda: _count(_running(cluster, "web"), 3), 40, "3 running tasks")
    tasks = await _running(cluster, "web")
    hostnames = await _nodes(cluster)
    assert len({t["NodeID"] for t in tasks}) == 2, "the replicas are spread over both agents"

    async def every_replica_logged() -> bool:
        out = await docker(host, "service", "logs", "web")
        return all(f"{_prefix(t, hostnames[t['NodeID']])}    | two" in out for t in tasks)

    await eventually(every_replica_logged, 20, "`docker service logs web` shows every replica's lines")
    out = await docker(host, "service", "logs", "web")
    assert sorted(line.rsplit("| ", 1)[1] for line in out.splitlines()) == ["one"] * 3 + ["two"] * 3

    tail = await docker(host, "service", "logs", "--tail", "1", "web")
    assert sorted(line.rsplit("| ", 1)[1] for line in tail.splitlines()) == ["two"] * 3

    one = tasks[0]
    by_task = await docker(host, "service", "logs", "--timestamps", one["ID"])
    lines = by_task.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [f"{_prefix(one, hostnames[one['NodeID']])}    | {word}"
                                                         for word in ("one", "two")]
    assert all(line[:4].isdigit() and line[19] == "." and line[29] == "Z" for line in lines), lines

    await _follow_receives_a_new_line(cluster, one, hostnames)


async def _follow_receives_a_new_line(c: LocalCluster, task: dict[str, Any], hostnames: dict[str, str]) -> None:
    follower = await asyncio.create_subprocess_exec(
        docker_binary(), "service", "logs", "-f", "web", env={**os.environ, "DOCKER_HOST": c.docker_host},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert follower.stdout is not None
    try:
        seen: list[str] = []

        async def read_until(text: str) -> None:
            while not any(text in line for line in seen):
                raw = await follower.stdout.readline()  # type: ignore[union-attr]
                assert raw, f"the follow stream ended early; got {seen}"
                seen.append(raw.decode())

        await asyncio.wait_for(read_until("two"), 30)
        agent = _agent_dir(c, task)
        (agent / "tasks" / task["ID"] / "go").touch()
        await asyncio.wait_for(read_until("tick"), 30)
        assert f"{_prefix(task, hostnames[task['NodeID']])}    | tick\n" in seen
        assert follower.returncode is None, "a follow stream stays open"
    finally:
        follower.kill()
        await follower.wait()
    await eventually(lambda: _no_streams(c), 30, "the agents ended the follow streams of a client that left")


def _agent_dir(c: LocalCluster, task: dict[str, Any]) -> Path:
    for i in (1, 2):
        if (c.options.agent_dir(i) / "tasks" / task["ID"]).is_dir():
            return c.options.agent_dir(i)
    raise AssertionError(f"no agent holds task {task['ID']}")


async def _no_streams(c: LocalCluster) -> bool:
    return await _log_streams(c, "agent-1") == 0 and await _log_streams(c, "agent-2") == 0


async def _count(items: Any, n: int) -> bool:
    return len(await items) == n


async def test_service_logs_with_the_docker_executor(engine: str, tmp_path: Path) -> None:
    name = f"logs{uuid.uuid4().hex[:8]}"  # the engine is shared: touch only this test's containers
    try:
        async with local_cluster(tmp_path, agents=2, executor="docker", engine=engine) as c:
            host = c.docker_host
            await docker(host, "service", "create", "--detach", "--name", name, "--replicas", "2",
                         "shoal-busybox:test", "sh", "-c", "echo host=$HOSTNAME; sleep 600")
            await eventually(lambda: _count(_running(c, name), 2), 60,
                             lambda: f"2 running containers; agent-1:\n{c.log('agent-1')}")
            tasks = await _running(c, name)
            hostnames = await _nodes(c)

            async def both_logged() -> bool:
                out = await docker(host, "service", "logs", name)
                return all(_prefix(t, hostnames[t["NodeID"]], name) in out for t in tasks)

            await eventually(both_logged, 30, "`docker service logs` shows both containers")
            out = await docker(host, "service", "logs", name)
            said = sorted(line.rsplit("| ", 1)[1] for line in out.splitlines())
            assert len(said) == 2 and all(s.startswith("host=") for s in said) and said[0] != said[1], out
            await docker(host, "service", "rm", name)
    finally:
        _remove_containers(engine, name)


def _remove_containers(engine: str, service: str) -> None:
    """Containers outlive their agents by design: a test removes the ones it made."""
    env = {**os.environ, "DOCKER_HOST": engine}
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={service}"],
                         env=env, capture_output=True, text=True, check=False).stdout.split()
    if ids:
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(["docker", "rm", "-f", *ids], env=env, capture_output=True, check=False, timeout=60)
