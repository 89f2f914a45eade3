"""Scheduling on a real cluster of processes (sim agents), driven by the real docker CLI: a 500G
reservation waits with Swarm's message until a big enough node joins; generic resources are counted;
`/shoal/tasks/{id}/explain` says why a task waits (mixed causes) and how a placed one was ranked."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.cluster import LocalCluster, local_cluster
from tests.e2e.cli import api_get, docker, eventually, filters

pytestmark = pytest.mark.e2e


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with local_cluster(tmp_path, agents=2, executor="sim") as c:
        yield c


@contextlib.asynccontextmanager
async def big_node(c: LocalCluster, state_dir: Path) -> AsyncIterator[None]:
    """One more sim agent, `huge`, with 1 TiB of memory and two named GPUs: a machine joining later."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.agent", "--nats", c.nats_url, "--metrics-addr", "127.0.0.1:0",
        "--executor", "sim", "--state-dir", str(state_dir), "--hostname", "huge", "--addr", "127.0.0.9",
        "--sim-memory", "1T", "--generic-resource", "gpu=GPU-0", "--generic-resource", "gpu=GPU-1",
        "--token-file", str(c.options.token_file("worker")),
        stdout=asyncio.subprocess.DEVNULL, stderr=(state_dir.parent / "huge.log").open("wb"))
    try:
        yield
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


async def tasks(c: LocalCluster, service: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await api_get(c.api_url, f"/tasks?filters={quote(filters(service=service))}")
    return found


async def wait_tasks(c: LocalCluster, service: str, what: str, check: Any) -> list[dict[str, Any]]:
    """Poll the service's tasks until `check(tasks)` holds; the tasks then."""
    seen: list[dict[str, Any]] = []

    async def holds() -> bool:
        seen[:] = await tasks(c, service)
        return bool(check(seen))

    await eventually(holds, 60, lambda: f"{service}: {what}; tasks: {seen}\nscheduler:\n{c.log('scheduler')}")
    return seen


def errs(found: list[dict[str, Any]]) -> list[str]:
    return sorted(t["Status"].get("Err") or "" for t in found if t["Status"]["State"] == "pending")


def running_on(found: list[dict[str, Any]]) -> list[str]:
    return sorted(t["NodeID"] for t in found if t["Status"]["State"] == "running")


async def explain(c: LocalCluster, ref: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(f"{c.api_url}/shoal/tasks/{ref}/explain") as resp:
        return resp.status, await resp.json()


async def node_ids(host: str) -> dict[str, str]:
    out = await docker(host, "node", "ls", "--format", "{{.Hostname}} {{.ID}} {{.Status}}")
    return {h: i for h, i, status in (line.split() for line in out.splitlines()) if status == "Ready"}


async def test_placement_waits_with_swarms_message_and_explains_itself(cluster: LocalCluster, tmp_path: Path) -> None:
    host = cluster.docker_host
    await eventually(lambda: _count(node_ids(host), 2), 30, "two ready nodes")

    await docker(host, "service", "create", "--detach", "--name", "big", "--reserve-memory", "500G", "busybox",
                 "sleep", "600")
    await wait_tasks(cluster, "big", "pending on both nodes for memory",
                     lambda f: errs(f) == ["no suitable node (insufficient resources on 2 nodes)"])
    assert "no suitable node (insufficient resources on 2 nodes)" in await docker(
        host, "service", "ps", "--no-trunc", "big")

    async with big_node(cluster, tmp_path / "huge"):
        await eventually(lambda: _count(node_ids(host), 3), 30, "the big node joined")
        nodes = await node_ids(host)
        await wait_tasks(cluster, "big", "placed on the node that joined",
                         lambda f: running_on(f) == [nodes["huge"]])

        await docker(host, "service", "create", "--detach", "--name", "gpu", "--replicas", "3",
                     "--generic-resource", "gpu=1", "busybox", "sleep", "600")
        await docker(host, "node", "update", "--availability", "drain", "test-2")
        gpu = await wait_tasks(cluster, "gpu", "two on the GPU node, one waiting for a third GPU",
                               lambda f: running_on(f) == [nodes["huge"]] * 2 and len(errs(f)) == 1)
        assert errs(gpu)[0].startswith("no suitable node (insufficient resources on ")

        await docker(host, "service", "create", "--detach", "--name", "picky", "--reserve-memory", "10G",
                     "--constraint", "node.labels.zone==eu", "busybox", "sleep", "600")
        picky = await wait_tasks(cluster, "picky", "pending for three different reasons", lambda f: errs(f) == [
            "no suitable node (1 node not available for new tasks; insufficient resources on 1 node; "
            "scheduling constraints not satisfied on 1 node)"])
        status, why = await explain(cluster, picky[0]["ID"][:12])  # a unique prefix will do
        assert status == 200, why
        assert (why["Task"], why["ServiceName"], why["State"], why["NodeID"]) == (
            picky[0]["ID"], "picky", "pending", "")
        assert why["Message"] == errs(picky)[0]
        verdicts = {v["Hostname"]: (v["Eligible"], v["Filter"], v["Rank"]) for v in why["Nodes"]}
        assert verdicts == {"test-1": (False, "resources", None), "test-2": (False, "not_available", None),
                            "huge": (False, "constraints", None)}

        await docker(host, "service", "create", "--detach", "--name", "web", "--replicas", "2", "busybox",
                     "sleep", "600")
        web = await wait_tasks(cluster, "web", "one on each active node",
                               lambda f: running_on(f) == sorted([nodes["huge"], nodes["test-1"]]))
        on_huge = next(t for t in web if t["NodeID"] == nodes["huge"])
        status, why = await explain(cluster, on_huge["ID"])
        assert status == 200, why
        ranked = [(v["Hostname"], v["Rank"], v["Chosen"], v["Filter"]) for v in why["Nodes"]]
        assert ranked == [("huge", 1, True, ""), ("test-1", 2, False, ""), ("test-2", None, False, "not_available")]
        huge = why["Nodes"][0]["Score"]
        assert (huge["ServiceTasks"], huge["TotalTasks"]) == (0, 3)  # itself left out; big and two gpu tasks

        await docker(host, "node", "update", "--label-add", "zone=eu", "huge")
        await wait_tasks(cluster, "picky", "placed once a node carries the label",
                         lambda f: running_on(f) == [nodes["huge"]])

    status, body = await explain(cluster, "no-such-task")
    assert (status, body) == (404, {"message": "task no-such-task not found"})


async def _count(found: Any, n: int) -> bool:
    return len(await found) == n
