"""The routing mesh on loopback: three agents at 127.0.0.1, .2 and .3 run an HTTP service that
answers with its task id; the real docker CLI creates and scales it; requests go to one node's
published port and must reach every replica, whichever node it runs on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.agent.ingress import nft
from tests.apt import KERNEL_MODE, commands
from tests.cluster import LocalCluster, free_ports, local_cluster, node_ids
from tests.e2e.cli import api_get, docker, docker_binary, eventually, filters

pytestmark = pytest.mark.asyncio

SERVER = """
import os, http.server as h
class H(h.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = os.path.basename(os.getcwd()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
h.ThreadingHTTPServer((os.environ["SHOAL_NODE_ADDR"], int(os.environ["PORT"])), H).serve_forever()
"""
"""The process executor runs a task in its own directory, named for the task: the answer is the task id."""


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with local_cluster(tmp_path, agents=3, executor="process") as c:
        yield c


@pytest.fixture
async def kernel_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LocalCluster]:
    """The same cluster in the default `--ingress-mode auto`, which as root with nftables installed is
    kernel mode: each agent keeps its node's nftables table, which is gone once the agents have stopped."""
    commands(KERNEL_MODE, "the kernel mode's tests")
    monkeypatch.setenv("SHOAL_INGRESS_MODE", "auto")
    async with local_cluster(tmp_path, agents=3, executor="process") as c:
        yield c
        tables = [nft.table_name(n) for n in node_ids(c.options)]
        assert len(tables) == 3
    assert not set(tables) & set(await _nft("list", "tables")), "the agents removed their tables"


async def _nft(*args: str, script: str = "") -> str:
    """`nft <args>`' output, `script` its input ("" if it fails, as listing a missing table does)."""
    proc = await asyncio.create_subprocess_exec("nft", *args, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate(script.encode())
    return out.decode() if proc.returncode == 0 else ""


async def _rules(cluster: LocalCluster, agent: int) -> str:
    """The nftables table of agent `agent` (1-based, at 127.0.0.<agent>)."""
    return await _nft("list", "table", "ip", nft.table_name(node_ids(cluster.options)[agent - 1]))


async def _tasks(cluster: LocalCluster, service: str, state: str = "running") -> list[dict[str, Any]]:
    tasks = await api_get(cluster.api_url, f"/tasks?filters={filters(service=service, desired_state='running')}")
    return [t for t in tasks if t["Status"]["State"] == state]


async def _create(cluster: LocalCluster, name: str, publish: str, replicas: int) -> None:
    await docker(cluster.docker_host, "service", "create", "--detach", "--name", name, "--replicas", str(replicas),
                 "--publish", publish, "--stop-grace-period", "2s", "busybox", "python3", "-c", SERVER)


async def _metrics(cluster: LocalCluster, name: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(cluster.metrics_url(name)) as resp:
        return await resp.text()


def _samples(metrics: str, name: str, service: str) -> list[float]:
    """The values of `name`'s series for `service`, from a /metrics text."""
    return [float(line.split()[-1]) for line in metrics.splitlines()
            if line.startswith(name + "{") and f'service="{service}"' in line]


async def _get(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        assert resp.status == 200
        return await resp.text()


async def _spread(url: str, n: int) -> Counter[str]:
    """n requests, each on a new connection (the mesh balances connections, not requests)."""
    answers: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(n):
            answers[await _get(session, url)] += 1
    return answers


async def _serving(cluster: LocalCluster, url: str, service: str, replicas: int) -> bool:
    """All running replicas are in rotation (each answered within a round of requests)."""
    running = {str(t["ID"]) for t in await _tasks(cluster, service)}
    if len(running) != replicas:
        return False
    try:
        return set(await _spread(url, replicas * 2)) == running
    except (aiohttp.ClientError, AssertionError):
        return False


async def test_one_published_port_balances_across_replicas_on_every_node(cluster: LocalCluster) -> None:
    port = free_ports(1)
    await _create(cluster, "web", f"{port}:80", 3)
    url = f"http://127.0.0.2:{port}/"
    await eventually(lambda: _serving(cluster, url, "web", 3), 60, "3 replicas answer through 127.0.0.2")

    tasks = await _tasks(cluster, "web")
    assert len({t["NodeID"] for t in tasks}) == 3, "spread puts one replica on each node"
    answers = await _spread(url, 60)
    assert set(answers) == {t["ID"] for t in tasks}
    assert all(15 <= n <= 25 for n in answers.values()), answers

    [svc] = await api_get(cluster.api_url, "/services")
    assert svc["Endpoint"]["Ports"] == [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": port,
                                         "PublishMode": "ingress"}]
    ls = await docker(cluster.docker_host, "service", "ls", "--format", "{{.Ports}}")
    assert ls.strip() == f"*:{port}->80/tcp"
    for t in tasks:
        [local] = t["Status"]["PortStatus"]["Ports"]
        assert local["TargetPort"] == 80 and local["PublishedPort"] > 0

    forwarded = _samples(await _metrics(cluster, "agent-2"), "shoal_ingress_connections_total", "web")
    assert sum(forwarded) >= 60, forwarded
    assert len(forwarded) == 3, "one series per backend node"

    # Scale to 5: the new replicas get traffic, and a keep-alive connection opened before keeps its replica.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as kept:
        before = await _get(kept, url)
        await docker(cluster.docker_host, "service", "scale", "--detach", "web=5")
        await eventually(lambda: _serving(cluster, f"http://127.0.0.3:{port}/", "web", 5), 60,
                         "5 replicas in rotation")
        assert [await _get(kept, url) for _ in range(5)] == [before] * 5, "the connection in flight is untouched"

    # Scale down to 2 under traffic: replicas leave rotation before they stop, so no request fails.
    load = asyncio.get_running_loop().create_task(_spread(url, 150))
    await docker(cluster.docker_host, "service", "scale", "--detach", "web=2")
    await eventually(lambda: _serving(cluster, url, "web", 2), 60, "2 replicas in rotation")
    assert sum((await load).values()) == 150


async def test_killed_replica_loses_no_request_and_its_replacement_joins(cluster: LocalCluster) -> None:
    port = free_ports(1)
    await _create(cluster, "web", f"{port}:80", 3)
    url = f"http://127.0.0.1:{port}/"
    await eventually(lambda: _serving(cluster, url, "web", 3), 60, "3 replicas in rotation")

    victim = (await _tasks(cluster, "web"))[0]
    pid = victim["Status"]["ContainerStatus"]["PID"]
    assert isinstance(pid, int) and pid > 0
    os.kill(pid, signal.SIGKILL)
    # Requests keep flowing while the task dies and is replaced: a refused backend is skipped.
    answers = await _spread(url, 60)
    assert sum(answers.values()) == 60
    await eventually(lambda: _serving(cluster, url, "web", 3), 60, "the replacement is in rotation")
    assert victim["ID"] not in {t["ID"] for t in await _tasks(cluster, "web")}


async def test_drained_node_keeps_forwarding_to_the_others(cluster: LocalCluster) -> None:
    port = free_ports(1)
    await _create(cluster, "web", f"{port}:80", 3)
    url = f"http://127.0.0.3:{port}/"
    await eventually(lambda: _serving(cluster, url, "web", 3), 60, "3 replicas in rotation")
    await _drain_node_of(cluster, url, "web", 3)


async def _drain_node_of(cluster: LocalCluster, url: str, service: str, replicas: int) -> None:
    """Drain the node whose address `url` names: its replicas move, and its port reaches them all."""
    nodes = await api_get(cluster.api_url, "/nodes")
    drained = next(n["ID"] for n in nodes if n["Status"]["Addr"] == url.split("/")[2].split(":")[0])
    await docker(cluster.docker_host, "node", "update", "--availability", "drain", drained)

    async def moved() -> bool:
        tasks = await _tasks(cluster, service)
        return len(tasks) == replicas and drained not in {t["NodeID"] for t in tasks}

    await eventually(moved, 60, "the drained node's replicas moved")
    await eventually(lambda: _serving(cluster, url, service, replicas), 60,
                     "the drained node still forwards to every replica")


async def test_published_port_of_another_service_is_refused(cluster: LocalCluster) -> None:
    port = free_ports(1)
    await _create(cluster, "web", f"{port}:80", 1)
    proc = await asyncio.create_subprocess_exec(
        docker_binary(), "service", "create", "--detach", "--name", "other", "-p", f"{port}:81",
        "busybox", "sleep", "60",
        env={**os.environ, "DOCKER_HOST": cluster.docker_host}, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    web = json.loads(await docker(cluster.docker_host, "service", "inspect", "web"))[0]
    assert proc.returncode != 0
    assert (f"port '{port}' is already in use by service 'web' ({web['ID']}) as an ingress port"
            in err.decode()), err.decode()

    # Published without a number: the lowest free port of 30000-32767, shown in Endpoint.Ports only.
    await docker(cluster.docker_host, "service", "create", "--detach", "--name", "auto", "-p", "80",
                 "busybox", "sleep", "60")
    auto = json.loads(await docker(cluster.docker_host, "service", "inspect", "auto"))[0]
    [assigned] = auto["Endpoint"]["Ports"]
    assert 30000 <= assigned["PublishedPort"] <= 32767
    assert auto["Spec"]["EndpointSpec"]["Ports"][0].get("PublishedPort", 0) == 0
    ls = await docker(cluster.docker_host, "service", "ls", "--filter", "name=auto", "--format", "{{.Ports}}")
    assert ls.strip() == f"*:{assigned['PublishedPort']}->80/tcp"


async def test_host_mode_binds_the_published_port_on_each_node_and_a_third_replica_waits(
        cluster: LocalCluster) -> None:
    port = free_ports(1)
    await docker(cluster.docker_host, "node", "update", "--availability", "drain",
                 next(n["ID"] for n in await api_get(cluster.api_url, "/nodes") if n["Status"]["Addr"] == "127.0.0.3"))
    await _create(cluster, "edge", f"mode=host,target=80,published={port}", 3)

    async def two_running() -> bool:
        return len(await _tasks(cluster, "edge")) == 2

    await eventually(two_running, 60, "2 host-mode replicas running")

    async def each_node_answers() -> bool:
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
                answers = {await _get(session, f"http://127.0.0.{i}:{port}/") for i in (1, 2)}
        except aiohttp.ClientError:
            return False  # running is reported when the process starts, a moment before it listens
        return answers == {t["ID"] for t in await _tasks(cluster, "edge")}

    await eventually(each_node_answers, 30, "each node's replica answers on the published port itself")

    async def third_pending() -> bool:
        pending = await _tasks(cluster, "edge", "pending")
        return len(pending) == 1 and "host-mode port already in use on 2 nodes" in str(pending[0]["Status"]["Err"])

    await eventually(third_pending, 30, "the third replica pending with the host-port reason")


UDP_ECHO = """
import os, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((os.environ["SHOAL_NODE_ADDR"], int(os.environ["SHOAL_PORT_53"])))
while True:
    data, client = s.recvfrom(2048)
    s.sendto(os.path.basename(os.getcwd()).encode(), client)
"""


class _Reply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.answer.done():
            self.answer.set_result(data)


async def _ask_udp(addr: str, port: int) -> str | None:
    """One datagram from a fresh client address (a new flow); the answer, or None if none came."""
    transport, reply = await asyncio.get_running_loop().create_datagram_endpoint(_Reply, remote_addr=(addr, port))
    try:
        transport.sendto(b"who")
        return (await asyncio.wait_for(reply.answer, 1)).decode()
    except TimeoutError:
        return None
    finally:
        transport.close()


async def _udp_replicas_answer(cluster: LocalCluster) -> int:
    """A UDP service of 3 replicas, each answering flows sent to 127.0.0.3; its published port."""
    port = free_ports(1)
    await docker(cluster.docker_host, "service", "create", "--detach", "--name", "dns", "--replicas", "3",
                 "--publish", f"published={port},target=53,protocol=udp", "busybox", "python3", "-c", UDP_ECHO)

    async def every_replica_answers() -> bool:
        running = {t["ID"] for t in await _tasks(cluster, "dns")}
        answers = {await _ask_udp("127.0.0.3", port) for _ in range(6)}
        return len(running) == 3 and answers == running

    await eventually(every_replica_answers, 60, "3 UDP replicas answer through 127.0.0.3")
    return port


async def test_udp_flows_reach_every_replica(cluster: LocalCluster) -> None:
    port = await _udp_replicas_answer(cluster)
    ls = await docker(cluster.docker_host, "service", "ls", "--format", "{{.Ports}}")
    assert ls.strip() == f"*:{port}->53/udp"


async def test_publishing_another_port_moves_the_listener_on_every_node(cluster: LocalCluster) -> None:
    old, new = free_ports(1), free_ports(1)
    await _create(cluster, "web", f"{old}:80", 2)
    await eventually(lambda: _serving(cluster, f"http://127.0.0.1:{old}/", "web", 2), 60, "2 replicas on the old port")
    await docker(cluster.docker_host, "service", "update", "--detach", "--publish-rm", "80",
                 "--publish-add", f"{new}:80", "web")

    async def moved() -> bool:
        if not await _serving(cluster, f"http://127.0.0.2:{new}/", "web", 2):
            return False
        try:
            await _spread(f"http://127.0.0.2:{old}/", 1)
        except aiohttp.ClientError:
            return True  # the old port is closed
        return False

    await eventually(moved, 60, "the new port answers and the old one is closed")
    ls = await docker(cluster.docker_host, "service", "ls", "--format", "{{.Ports}}")
    assert ls.strip() == f"*:{new}->80/tcp"


async def test_kernel_mode_balances_scales_follows_drain_and_forwards_udp(kernel_cluster: LocalCluster) -> None:
    cluster = kernel_cluster
    port = free_ports(1)
    await _create(cluster, "web", f"{port}:80", 3)
    url = f"http://127.0.0.2:{port}/"
    await eventually(lambda: _serving(cluster, url, "web", 3), 60, "3 replicas answer through 127.0.0.2's rules")
    tasks = await _tasks(cluster, "web")
    answers = await _spread(url, 60)
    assert set(answers) == {t["ID"] for t in tasks}
    assert all(15 <= n <= 25 for n in answers.values()), answers
    rules = await _rules(cluster, 2)
    assert f"ip daddr 127.0.0.2 tcp dport {port} goto route_tcp_{port}" in rules
    assert rules.count("dnat to") == 3 and all(t["ID"] in rules for t in tasks), rules

    async def counted() -> bool:
        """The rules' counters reach the metrics within kernel.COUNT_EVERY_S."""
        metrics = await _metrics(cluster, "agent-2")
        return (sum(_samples(metrics, "shoal_ingress_connections_total", "web")) >= 60
                and sum(_samples(metrics, "shoal_ingress_bytes_total", "web")) >= 60 * 100)

    await eventually(counted, 30, "agent-2's rules' connection and byte counters in its metrics")

    await docker(cluster.docker_host, "service", "scale", "--detach", "web=5")
    await eventually(lambda: _serving(cluster, f"http://127.0.0.3:{port}/", "web", 5), 60, "5 replicas in rotation")
    await _drain_node_of(cluster, f"http://127.0.0.3:{port}/", "web", 5)

    udp_port = await _udp_replicas_answer(cluster)  # through the drained node's rules
    assert f"ip daddr 127.0.0.3 udp dport {udp_port} goto route_udp_{udp_port}" in await _rules(cluster, 3)


async def test_kernel_mode_takes_a_killed_replica_out_and_an_agent_replaces_its_stale_table(
        kernel_cluster: LocalCluster) -> None:
    cluster = kernel_cluster
    port = free_ports(1)
    await _create(cluster, "web", f"{port}:80", 3)
    url = f"http://127.0.0.1:{port}/"
    await eventually(lambda: _serving(cluster, url, "web", 3), 60, "3 replicas in rotation")

    victim = (await _tasks(cluster, "web"))[0]
    os.kill(victim["Status"]["ContainerStatus"]["PID"], signal.SIGKILL)
    # Until the rules lose it, the dead replica refuses: its reset is dropped, the client's SYN comes
    # again a second later and goes to another replica. No request fails.
    answers = await _spread(url, 30)
    assert sum(answers.values()) == 30 and victim["ID"] not in answers

    async def replaced() -> bool:
        running = {t["ID"] for t in await _tasks(cluster, "web")}
        rules = await _rules(cluster, 1)
        return len(running) == 3 and victim["ID"] not in rules and all(t in rules for t in running)

    await eventually(replaced, 60, "the killed replica's rule is replaced by its replacement's")
    await eventually(lambda: _serving(cluster, url, "web", 3), 60, "the replacement answers")

    # An agent that stops removes its table; one that starts replaces whatever table has its name.
    await cluster.stop_process("agent-1")
    assert await _rules(cluster, 1) == ""
    name = nft.table_name(node_ids(cluster.options)[0])
    stale = f"ip daddr 127.0.0.1 tcp dport {port} reject with tcp reset"
    hook = "type nat hook output priority -100;"
    await _nft("-f", "-", script=f"table ip {name} {{\nchain output {{\n{hook}\n{stale}\n}}\n}}\n")
    assert stale in await _rules(cluster, 1)
    await cluster.start_process("agent-1")
    await eventually(lambda: _serving(cluster, url, "web", 3), 60, "the restarted agent's rules forward again")
    assert "reject" not in await _rules(cluster, 1)

    # A table someone else deleted is noticed when its counters are next read, and applied again.
    await _nft("delete", "table", "ip", nft.table_name(node_ids(cluster.options)[1]))
    assert await _rules(cluster, 2) == ""
    await eventually(lambda: _serving(cluster, f"http://127.0.0.2:{port}/", "web", 3), 60,
                     "agent-2's deleted rules are back")
