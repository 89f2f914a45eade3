"""The `shoal` client commands against a real cluster (`shoal up`'s processes, sim agents), with
the real docker CLI making the changes they report on."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.cluster import LocalCluster, local_cluster
from tests.e2e.cli import api_get, docker, eventually, filters

pytestmark = pytest.mark.e2e


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with local_cluster(tmp_path, agents=2, executor="sim") as c:
        yield c


async def shoal(c: LocalCluster, *args: str, code: int = 0) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", *args, "--api", c.options.api_addr,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == code, f"shoal {' '.join(args)} exited {proc.returncode}: {err.decode()}"
    return out.decode() if code == 0 else err.decode()


async def _running(c: LocalCluster, service: str, replicas: int) -> list[dict[str, Any]]:
    async def done() -> bool:
        tasks = await api_get(c.api_url, f"/tasks?filters={quote(filters(service=service, desired_state='running'))}")
        return bool(sum(t["Status"]["State"] == "running" for t in tasks) == replicas)
    await eventually(done, what=f"{service} runs {replicas} tasks")
    tasks: list[dict[str, Any]] = await api_get(c.api_url, f"/tasks?filters={quote(filters(service=service))}")
    return tasks


async def test_events_and_state_tell_the_story_of_a_service(cluster: LocalCluster) -> None:
    host = cluster.docker_host
    service_id = (await docker(host, "service", "create", "-d", "--name", "web", "--replicas", "2", "busybox")).strip()
    await _running(cluster, "web", 2)

    out = await shoal(cluster, "events", "--filter", "type=ServiceCreated")
    [created] = [json.loads(line) for line in out.splitlines()]
    assert created["Entry"]["Event"]["ServiceID"] == service_id and created["Entry"]["Actor"].startswith("api")
    seq = created["Seq"]

    table = (await shoal(cluster, "events", "--format", "table", "--filter", f"service={service_id}")).splitlines()
    assert table[0].split() == ["SEQ", "TIME", "ACTOR", "EVENT", "OBJECT"]
    assert table[1].split()[3:] == ["ServiceCreated", f"service={service_id}"]
    assert {"TaskCreated", "TaskAssigned", "TaskStatusChanged"} <= {row.split()[3] for row in table[1:]}

    await docker(host, "service", "rm", "web")
    then = json.loads(await shoal(cluster, "state", "--at", str(seq)))
    assert then["Seq"] == seq and [s["Spec"]["Name"] for s in then["Services"]] == ["web"] and not then["Tasks"]
    now = json.loads(await shoal(cluster, "state"))
    assert now["Seq"] > seq and now["Services"] == []
    assert "invalid at" in await shoal(cluster, "state", "--at", "yesterday", code=1)


async def test_events_follow_prints_entries_as_they_are_appended(cluster: LocalCluster) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "events", "--follow", "--format", "table",
        "--filter", "type=ServiceCreated", "--api", cluster.options.api_addr, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).split()[0] == b"SEQ"
        service_id = (await docker(cluster.docker_host, "service", "create", "-d", "--name", "late", "busybox")).strip()
        row = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().split()
        assert row[3:] == ["ServiceCreated", f"service={service_id}"]
    finally:
        proc.terminate()
        await proc.wait()


async def test_explain_names_the_chosen_node_and_the_rejected_one(cluster: LocalCluster) -> None:
    """Needs `GET /shoal/tasks/{id}/explain`, which the scheduling issue's branch adds: until it is
    merged this fails saying so."""
    host = cluster.docker_host
    await docker(host, "service", "create", "-d", "--name", "pinned", "--constraint", "node.hostname==test-2",
                 "busybox")
    [task] = await _running(cluster, "pinned", 1)
    out = await _explain(cluster, task["ID"][:8])
    assert f"Task:     {task['ID']}" in out and "Service:  pinned (" in out
    rows = {line.split()[1]: line for line in out.split("\n\n")[1].splitlines()[1:]}
    assert rows["test-2"].split()[2] == "chosen" and rows["test-1"].split()[2] == "rejected"
    assert "constraint" in rows["test-1"]
    err = await shoal(cluster, "explain", "nosuchtask", code=1)
    assert err.startswith("shoal: Error response from the Shoal API:") and "Traceback" not in err


async def _explain(c: LocalCluster, task: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "explain", task, "--api", c.options.api_addr,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    if "page not found" in err.decode():
        pytest.fail("the api does not serve GET /shoal/tasks/{id}/explain yet: it comes with the scheduling "
                    "issue's branch; this test passes once that is merged")
    assert proc.returncode == 0, err.decode()
    return out.decode()
