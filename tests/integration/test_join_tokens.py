"""Join tokens on a real cluster: `shoal up`'s agents join with the tokens it hands them; an agent
process with a wrong or rotated token is refused (exit code, log line, nothing in the log), and a
manager token makes a manager."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from services.agent.admission import EXIT_REFUSED
from tests.cluster import LocalCluster, local_cluster
from tests.e2e.cli import api_get, eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with local_cluster(tmp_path / "cluster", agents=1, executor="sim") as c:
        yield c


async def agent(cluster: LocalCluster, state_dir: Path, token: str, hostname: str) -> asyncio.subprocess.Process:
    """An agent process logging to `<state_dir>.log`, read once it has exited or failed to (a pipe
    would have to be drained while it runs)."""
    with state_dir.with_suffix(".log").open("wb") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.agent", "--nats", cluster.nats_url, "--metrics-addr", "127.0.0.1:0",
            "--executor", "sim", "--state-dir", str(state_dir), "--hostname", hostname, "--token", token,
            stdout=asyncio.subprocess.DEVNULL, stderr=log)


async def refused(proc: asyncio.subprocess.Process, state_dir: Path) -> str:
    await asyncio.wait_for(proc.wait(), 30)
    err = state_dir.with_suffix(".log").read_text()
    assert proc.returncode == EXIT_REFUSED, err[-2000:]
    return err


async def stop(proc: asyncio.subprocess.Process, state_dir: Path) -> None:
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 30)
    except TimeoutError:
        proc.kill()
        log = state_dir.with_suffix(".log").read_text()[-3000:]
        raise AssertionError(f"agent {state_dir.name} did not stop within 30 s of SIGTERM:\n{log}") from None


async def roles(cluster: LocalCluster) -> dict[str, str]:
    return {n["Description"]["Hostname"]: n["Spec"]["Role"] for n in await api_get(cluster.api_url, "/nodes")}


async def tokens(cluster: LocalCluster) -> dict[str, str]:
    return dict((await api_get(cluster.api_url, "/swarm"))["JoinTokens"])


async def rotate_worker_token(api: str) -> str:
    """`docker swarm join-token --rotate worker` as the CLI does it (read, then update at the version
    read); the token it replaced. The cluster object may move between the two (the orchestrator
    records the agents' heartbeat period once it hears them), which refuses the update as out of
    sequence, as Swarm does: then read again."""
    old = ""

    async def rotated() -> bool:
        nonlocal old
        swarm = await api_get(api, "/swarm")
        old = swarm["JoinTokens"]["Worker"]
        rotate = {"version": str(swarm["Version"]["Index"]), "rotateWorkerToken": "true"}
        async with aiohttp.ClientSession() as s, s.post(f"{api}/swarm/update", params=rotate, json=swarm["Spec"]) as r:
            body = await r.text()
            if r.status == 500 and "update out of sequence" in body:
                return False
            assert r.status == 200, body
            return True

    await eventually(rotated, 30, "the worker token is rotated")
    return old


async def test_shoal_up_agents_join_and_wrong_tokens_are_refused(cluster: LocalCluster, tmp_path: Path) -> None:
    async def first_agent_joined() -> bool:
        return await roles(cluster) == {"test-1": "manager"}
    await eventually(first_agent_joined, what=lambda: f"agent-1 joins as a manager:\n{cluster.log('agent-1')}")

    wrong = await agent(cluster, tmp_path / "wrong", "SWMTKN-1-nope-nope", "wrong")
    assert "join token refused" in await refused(wrong, tmp_path / "wrong")

    old = await rotate_worker_token(cluster.api_url)
    new = (await tokens(cluster))["Worker"]
    assert new != old
    rotated = await agent(cluster, tmp_path / "rotated", old, "rotated")
    assert "was rotated or is mistyped" in await refused(rotated, tmp_path / "rotated")

    manager = await agent(cluster, tmp_path / "manager", (await tokens(cluster))["Manager"], "mgr2")
    worker = await agent(cluster, tmp_path / "worker", new, "wrk")
    try:
        async def both_joined() -> bool:
            return await roles(cluster) == {"test-1": "manager", "mgr2": "manager", "wrk": "worker"}
        try:
            await eventually(both_joined, what="the new agents join in their tokens' roles")
        except AssertionError as e:
            logs = "\n".join((tmp_path / f"{n}.log").read_text()[-2000:] for n in ("manager", "worker"))
            raise AssertionError(f"{e}\n{logs}") from None
    finally:
        try:
            await stop(manager, tmp_path / "manager")
        finally:
            await stop(worker, tmp_path / "worker")
    events = await _log_types(cluster)
    assert events.count("NodeJoined") == 3


async def _log_types(cluster: LocalCluster) -> list[str]:
    async with aiohttp.ClientSession() as s, s.get(f"{cluster.api_url}/shoal/events") as r:
        lines = (await r.text()).splitlines()
    return [json.loads(line)["Entry"]["Event"]["Type"] for line in lines]
