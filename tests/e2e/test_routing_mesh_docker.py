"""The routing mesh with the docker executor: `busybox httpd` containers in the host's network on three
agents at 127.0.0.1, .2 and .3 sharing one engine; each container serves the node-local port it was
given, which is also its answer, so the test can tell the replicas apart."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.apt import KERNEL_MODE, commands
from tests.cluster import LocalCluster, cluster_options, free_ports, local_cluster
from tests.e2e.cli import api_get, docker, eventually, filters

pytestmark = pytest.mark.asyncio

HTTPD = 'echo -n $PORT > /www/index.html && exec httpd -f -p "$SHOAL_NODE_ADDR:$PORT" -h /www'


@pytest.fixture(params=["proxy", "kernel"])
async def cluster(tmp_path: Path, engine: str, request: pytest.FixtureRequest,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LocalCluster]:
    """In each ingress mode: the agents' listeners, or their nftables rules."""
    if request.param == "kernel":
        commands(KERNEL_MODE, "the kernel mode's tests")
    monkeypatch.setenv("SHOAL_INGRESS_MODE", request.param)
    async with local_cluster(tmp_path, options=cluster_options(tmp_path, 3, "docker", engine)) as c:
        try:
            yield c
        finally:
            nodes = [n["ID"] for n in await api_get(c.api_url, "/nodes")]
            _remove_containers(engine, nodes)


def _remove_containers(engine: str, nodes: list[str]) -> None:
    env = {"DOCKER_HOST": engine, "PATH": "/usr/local/bin:/usr/bin:/bin"}
    for node in nodes:
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.swarm.node.id={node}"],
                             env=env, capture_output=True, text=True, check=False).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], env=env, capture_output=True, check=False)


async def test_busybox_httpd_replicas_share_one_published_port(cluster: LocalCluster, engine: str) -> None:
    port = free_ports(1)
    await docker(cluster.docker_host, "service", "create", "--detach", "--name", "web", "--replicas", "3",
                 "--publish", f"{port}:80", "shoal-busybox:test", "sh", "-c", HTTPD)

    async def local_ports() -> set[str]:
        tasks = await api_get(cluster.api_url, f"/tasks?filters={filters(service='web', desired_state='running')}")
        running = [t for t in tasks if t["Status"]["State"] == "running"]
        return {str(t["Status"]["PortStatus"]["Ports"][0]["PublishedPort"]) for t in running}

    async def all_answer(addr: str = "127.0.0.2") -> bool:
        expected = await local_ports()
        if len(expected) != 3:
            return False
        try:
            return set(await _spread(f"http://{addr}:{port}/", 6)) == expected
        except (aiohttp.ClientError, AssertionError):
            return False

    await eventually(all_answer, 90, "3 httpd containers answer through 127.0.0.2")
    # Each node's mesh follows the log on its own: 127.0.0.1's may be a moment behind 127.0.0.2's.
    await eventually(lambda: all_answer("127.0.0.1"), 30, "3 httpd containers answer through 127.0.0.1")
    answers = await _spread(f"http://127.0.0.1:{port}/", 30)
    assert set(answers) == await local_ports()
    assert all(n == 10 for n in answers.values()), answers

    # A container killed behind the engine's back: requests keep being answered by the others (in
    # kernel mode, a request refused by it is sent again by the client's TCP a second later).
    tasks = await api_get(cluster.api_url, f"/tasks?filters={filters(service='web', desired_state='running')}")
    task_id = next(t["ID"] for t in tasks if t["Status"]["State"] == "running")
    await docker(engine, "kill", (await docker(engine, "ps", "-q", "--filter",
                                               f"label=com.docker.swarm.task.id={task_id}")).strip())
    assert sum((await _spread(f"http://127.0.0.3:{port}/", 30)).values()) == 30
    await eventually(all_answer, 90, "the replacement container joins the rotation")


async def _spread(url: str, n: int) -> Counter[str]:
    answers: Counter[str] = Counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(n):
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                assert resp.status == 200
                answers[await resp.text()] += 1
    return answers
