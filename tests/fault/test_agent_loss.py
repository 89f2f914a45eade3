"""An agent that goes silent, frozen (SIGSTOP) or cut off by a network partition (a network
namespace the test creates): its node goes down and its tasks are replaced elsewhere; when it is
back, the node is ready again, its stale tasks are shut down, and no slot ever ends with two
running tasks (sim executor)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import free_ports, local_cluster
from tests.docker_engine import NoEngine, _apt_install
from tests.fault.harness import converge, create_service, eventually, nodes_ready, ok, running_per_slot, settled, tasks

pytestmark = [pytest.mark.fault, pytest.mark.timeout(180)]

REPLICAS = 6


async def _find(api: str, hostname: str) -> dict[str, Any] | None:
    for node in await ok(api, "GET", "/nodes"):
        if node["Description"]["Hostname"] == hostname:
            found: dict[str, Any] = node
            return found
    return None


async def _node(api: str, hostname: str) -> dict[str, Any]:
    node = await _find(api, hostname)
    assert node is not None, f"no node {hostname}"
    return node


async def _node_state(api: str, hostname: str, state: str) -> None:
    async def check() -> bool:
        node = await _find(api, hostname)
        return node is not None and node["Status"]["State"] == state

    await eventually(check, 60, f"node {hostname} {state}")


async def lose_and_recover(api: str, hostname: str, lose: Callable[[], Awaitable[None]],
                           recover: Callable[[], Awaitable[None]], nodes: int = 3) -> None:
    """The checks both kinds of silence share; the service is spread over all `nodes` once they are ready."""
    await nodes_ready(api, nodes)
    await create_service(api, "web", REPLICAS)
    await converge(api, "web", REPLICAS)
    node_id = (await _node(api, hostname))["ID"]
    stale = {t["ID"] for t in await tasks(api, "web") if t["NodeID"] == node_id and t["Status"]["State"] == "running"}
    assert stale, f"no task landed on {hostname}; the test needs one there"
    await lose()
    try:
        await _node_state(api, hostname, "down")

        async def replaced() -> bool:
            found = await tasks(api, "web")
            wanted = {t["ID"] for t in found if t["DesiredState"] == "running"}
            return settled(found, REPLICAS, reported=False) and not wanted & stale

        await eventually(replaced, 90, f"the tasks of {hostname} replaced on the other nodes")
    finally:
        await recover()
    await _node_state(api, hostname, "ready")

    async def stale_stopped() -> bool:
        return all(t["Status"]["State"] != "running" for t in await tasks(api, "web") if t["ID"] in stale)

    await eventually(stale_stopped, 60, f"the tasks {hostname} ran while it was gone are shut down")
    await converge(api, "web", REPLICAS)
    assert all(n == 1 for n in running_per_slot(await tasks(api, "web")).values())


async def test_an_agent_frozen_past_its_grace(tmp_path: Path) -> None:
    async with local_cluster(tmp_path, agents=3, executor="sim") as cluster:
        pid = cluster.supervisor.pid("agent-1")
        assert pid is not None

        async def freeze() -> None:
            os.kill(pid, signal.SIGSTOP)

        async def thaw() -> None:
            os.kill(pid, signal.SIGCONT)

        await lose_and_recover(cluster.api_url, "test-1", freeze, thaw)


# -- a network partition ------------------------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextlib.contextmanager
def network_namespace() -> Any:
    """A namespace joined to the host by a veth pair: (namespace name, host address, link to cut)."""
    if os.geteuid() != 0:
        raise AssertionError("the partition test creates a network namespace: run it as root")
    packages = [pkg for tool, pkg in (("ip", "iproute2"), ("nsenter", "util-linux")) if shutil.which(tool) is None]
    if packages:
        try:
            _apt_install(*packages)  # a clean Debian has no iproute2
        except NoEngine as e:
            raise AssertionError(str(e)) from e
    tag = uuid.uuid4().hex[:6]
    name, host_if, ns_if = f"shoal-{tag}", f"vh{tag}", f"vn{tag}"
    octet = int(tag[:2], 16)
    host_addr, ns_addr = f"10.251.{octet}.1", f"10.251.{octet}.2"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", name)
        _ip("addr", "add", f"{host_addr}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        for args in (("addr", "add", f"{ns_addr}/30", "dev", ns_if), ("link", "set", ns_if, "up"),
                     ("link", "set", "lo", "up")):
            _ip("-n", name, *args)
        yield name, host_addr, host_if
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


async def _forward(listen_host: str, listen_port: int, target_port: int) -> asyncio.Server:
    """nats-server listens on 127.0.0.1 only (as every Shoal listener): relay the namespace to it."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    return await asyncio.start_server(relay, listen_host, listen_port)


@contextlib.asynccontextmanager
async def agent_in(namespace: str, nats_url: str, state_dir: Path, hostname: str, token_file: Path
                   ) -> AsyncIterator[None]:
    log = (state_dir / "agent.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        "nsenter", f"--net=/var/run/netns/{namespace}", sys.executable, "-m", "services.agent",
        "--executor", "sim", "--nats", nats_url, "--state-dir", str(state_dir), "--hostname", hostname,
        "--token-file", str(token_file), stdout=log, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        proc.kill()
        await proc.wait()
        log.close()


async def test_an_agent_cut_off_by_a_network_partition(tmp_path: Path) -> None:
    with network_namespace() as (namespace, host_addr, link):
        async with local_cluster(tmp_path, agents=2, executor="sim") as cluster:
            port = free_ports(1)
            relay = await _forward(host_addr, port, cluster.options.nats_port)
            agent_dir = tmp_path / "partitioned"
            agent_dir.mkdir()
            try:
                async with agent_in(namespace, f"nats://{host_addr}:{port}", agent_dir, "cut",
                                    cluster.options.token_file("worker")):
                    await _node_state(cluster.api_url, "cut", "ready")

                    async def cut() -> None:
                        _ip("link", "set", link, "down")

                    async def heal() -> None:
                        _ip("link", "set", link, "up")

                    await lose_and_recover(cluster.api_url, "cut", cut, heal)
            finally:
                relay.close()
