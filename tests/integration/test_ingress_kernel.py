"""The kernel mode's rules against the real kernel, for what loopback cannot show (the e2e tests in
tests/e2e/test_routing_mesh.py cover loopback): connections from another host arrive through
`prerouting` and reach a backend on this node and one on another node (masqueraded), backends that
refuse are skipped on both ways back to such a client, and an agent that cannot manage nftables
refuses to start.

"Another host" and "another node" are network namespaces joined to this one by veth pairs; the other
node has no route back to the client, so its backend answers only if its traffic was masqueraded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.agent.ingress import nft
from services.agent.ingress.kernel import KernelForwarder, run_nft, run_tool
from services.agent.ingress.table import Backend, Route
from tests.apt import KERNEL_MODE, commands
from tests.nats_server import child_env, free_port, nats_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ANSWER = """
import socket, sys
s = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(sys.argv[3].encode())
    c.close()
"""
ASK = """
import socket, sys
for _ in range(int(sys.argv[3])):
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as c:
        print(c.recv(64).decode(), flush=True)
"""


@dataclass
class Peer:
    """A namespace at `addr`, linked to this one's `host_addr`."""

    name: str
    addr: str
    host_addr: str

    def run(self, *argv: str) -> list[str]:
        return ["nsenter", f"--net=/var/run/netns/{self.name}", *argv]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


FORWARDING = Path("/proc/sys/net/ipv4/ip_forward")


@pytest.fixture(autouse=True)
def kernel_mode_commands() -> None:
    commands(KERNEL_MODE, "the kernel mode's tests")

_uses = itertools.count()


@pytest.fixture
def forwarding() -> Iterator[None]:
    """This host forwards IPv4 (what kernel mode needs of a node, docs/routing-mesh.md) for the test,
    as it was after: a dockerd started by an earlier test may have switched it on, or not."""
    was = FORWARDING.read_text()
    FORWARDING.write_text("1\n")
    try:
        yield
    finally:
        FORWARDING.write_text(was)


@pytest.fixture
def peers(forwarding: None) -> Iterator[tuple[Peer, Peer]]:
    """A client host and another node, each in its own namespace on its own /24. Names and subnets
    are new for each use: a deleted namespace's veth pair goes a moment after `ip netns del`."""
    made = []
    use = next(_uses)
    try:
        for role, subnet in (("c", 0), ("n", 1)):
            net = f"10.{200 + subnet}.{(os.getpid() + use) % 250}"
            peer = Peer(f"shoal-{role}{os.getpid()}-{use}", f"{net}.2", f"{net}.1")
            _ip("netns", "add", peer.name)
            made.append(peer)
            host_if, peer_if = f"sh{role}{os.getpid()}{use}"[:14], f"sh{role}{os.getpid()}{use}"[:14] + "p"
            _ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if, "netns", peer.name)
            _ip("addr", "add", f"{peer.host_addr}/24", "dev", host_if)
            _ip("link", "set", host_if, "up")
            for args in (("addr", "add", f"{peer.addr}/24", "dev", peer_if), ("link", "set", peer_if, "up"),
                         ("link", "set", "lo", "up")):
                _ip("-n", peer.name, *args)
        yield made[0], made[1]
    finally:
        for peer in made:
            subprocess.run(["ip", "netns", "del", peer.name], check=False)  # takes its veth pair along


@pytest.fixture
async def servers() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    procs: list[asyncio.subprocess.Process] = []
    yield procs
    for p in procs:
        with contextlib.suppress(ProcessLookupError):  # one that ended by itself
            p.kill()
        await p.wait()


async def _serve(procs: list[asyncio.subprocess.Process], argv: list[str], addr: str, port: int, *args: str,
                 script: str = ANSWER) -> None:
    """`script` listening at addr:port, given `args` (ANSWER: the name it answers with)."""
    proc = await asyncio.create_subprocess_exec(*argv, sys.executable, "-c", script, addr, str(port), *args,
                                                stdout=asyncio.subprocess.PIPE)
    procs.append(proc)
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"ready\n"


async def _ask(client: Peer, addr: str, port: int, connections: int) -> Counter[str]:
    """The answers to `connections` connections made one after another from the client's host; every
    one must succeed."""
    argv = client.run(sys.executable, "-c", ASK, addr, str(port), str(connections))
    ask = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(ask.communicate(), 60)
    assert ask.returncode == 0, f"a connection failed: {err.decode()}"
    return Counter(out.decode().split())


async def test_connections_from_another_host_reach_local_and_remote_backends(
        peers: tuple[Peer, Peer], servers: list[asyncio.subprocess.Process]) -> None:
    client, node2 = peers
    node_addr = client.host_addr  # this node's address as the client's network sees it
    local_port, remote_port, published = free_port(), free_port(), free_port()
    await _serve(servers, [], node_addr, local_port, "local")
    await _serve(servers, node2.run(), node2.addr, remote_port, "remote")
    service = f"web{os.getpid()}"
    route = Route("tcp", published, "s1", service, (Backend("n1", "t1", node_addr, local_port),
                                                   Backend("n2", "t2", node2.addr, remote_port)))
    forwarder = KernelForwarder(f"itest{os.getpid()}", [node_addr])
    try:
        await forwarder.apply({("tcp", published): route})
        assert await _ask(client, node_addr, published, 10) == {"local": 5, "remote": 5}
        await forwarder.count()
    finally:
        await forwarder.remove()
    # Bytes counted on both ways through this host (arriving from another interface, or sent from
    # here): at least a SYN (60 bytes) in, and a SYN-ACK and the answer out, for each connection.
    for node, answer in (("n1", "local"), ("n2", "remote")):
        labels = {"service": service, "backend": node}
        assert (REGISTRY.get_sample_value("shoal_ingress_bytes_total", {**labels, "direction": "in"}) or 0) >= 5 * 60
        assert ((REGISTRY.get_sample_value("shoal_ingress_bytes_total", {**labels, "direction": "out"}) or 0)
                >= 5 * (60 + 52 + len(answer)))
    listing = await asyncio.create_subprocess_exec("nft", "list", "tables", stdout=asyncio.subprocess.PIPE)
    assert forwarder.name not in (await listing.communicate())[0].decode()


async def test_backends_that_refuse_are_skipped_and_counted(
        peers: tuple[Peer, Peer], servers: list[asyncio.subprocess.Process]) -> None:
    """A backend whose process died before the log said so: on this node its refusal leaves through
    `output`, on another node it is forwarded back (`forward`); either way it is dropped and counted,
    the client's SYN comes again and `numgen` gives it the next backend. Round robin over the sorted
    backends, one client, so every refused connection is retried on a live one."""
    client, node2 = peers
    node_addr = client.host_addr
    published = free_port()
    live, dead = free_port(), free_port()  # nothing listens on dead, here or on the other node
    await _serve(servers, [], node_addr, live, "local")
    await _serve(servers, node2.run(), node2.addr, live, "remote")
    service = f"refusing{os.getpid()}"
    route = Route("tcp", published, "s1", service, (
        Backend("n1", "t1", node_addr, live), Backend("n1", "t2", node_addr, dead),
        Backend("n2", "t3", node2.addr, live), Backend("n2", "t4", node2.addr, dead)))
    forwarder = KernelForwarder(f"itestr{os.getpid()}", [node_addr])
    try:
        await forwarder.apply({("tcp", published): route})
        assert await _ask(client, node_addr, published, 4) == {"local": 2, "remote": 2}
        await forwarder.count()
    finally:
        await forwarder.remove()

    def sample(metric: str, backend: str) -> float | None:
        return REGISTRY.get_sample_value(metric, {"service": service, "backend": backend})

    # Picks 0 (n1 answers), 1 (n1 refuses), 2 (n2 answers), 3 (n2 refuses), 0, 1 (n1 refuses), 2.
    assert sample("shoal_ingress_backend_failures_total", "n1") == 2
    assert sample("shoal_ingress_backend_failures_total", "n2") == 1
    assert sample("shoal_ingress_connections_total", "n1") == 4, "2 answered, 2 refused"
    assert sample("shoal_ingress_connections_total", "n2") == 3, "2 answered, 1 refused"


ECHO = """
import socket, sys
s = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
c, _ = s.accept()
got = 0
while got < int(sys.argv[3]):
    got += len(c.recv(65536))
c.sendall(b"y" * int(sys.argv[4]))
c.recv(1)
"""


async def test_bytes_are_counted_once_each_way_and_an_open_connection_is_active(
        servers: list[asyncio.subprocess.Process]) -> None:
    """On loopback a packet leaves through `output` and arrives through `prerouting` and `input`:
    counted once, the bytes of 10,000 sent and 30,000 answered (plus headers) are under twice that."""
    backend, published, sent, answered = free_port(), free_port(), 10_000, 30_000
    service, node_addr = f"bytes{os.getpid()}", "127.0.0.1"
    await _serve(servers, [], node_addr, backend, str(sent), str(answered), script=ECHO)
    route = Route("tcp", published, "s1", service, (Backend("n1", "t1", node_addr, backend),))
    forwarder = KernelForwarder(f"itestb{os.getpid()}", [node_addr])

    def sample(metric: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(metric, {"service": service, **labels}) or 0.0

    try:
        await forwarder.apply({("tcp", published): route})
        reader, writer = await asyncio.open_connection(node_addr, published)
        writer.write(b"x" * sent)
        assert len(await reader.readexactly(answered)) == answered
        await forwarder.count()
        assert sample("shoal_ingress_active_connections") == 1
        bytes_in = sample("shoal_ingress_bytes_total", backend="n1", direction="in")
        bytes_out = sample("shoal_ingress_bytes_total", backend="n1", direction="out")
        assert sent < bytes_in < 2 * sent and answered < bytes_out < 2 * answered, (bytes_in, bytes_out)
        writer.close()
        await writer.wait_closed()
        await forwarder.count()
        assert sample("shoal_ingress_active_connections") == 0
        assert sample("shoal_ingress_connections_total", backend="n1") == 1
    finally:
        await forwarder.remove()


NAME_UDP = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    _, client = s.recvfrom(64)
    s.sendto(sys.argv[3].encode(), client)
"""


async def test_a_departed_backend_is_forgotten_by_conntrack_so_clients_move_on(
        peers: tuple[Peer, Peer], servers: list[asyncio.subprocess.Process], caplog: pytest.LogCaptureFixture) -> None:
    """A connection whose SYN went to a node that no longer answers, and a UDP flow whose backend
    left, would keep their conntrack entry and so their backend; dropped from the routes, the backend
    is dropped from conntrack too, and the client's next SYN or datagram finds the backend left."""
    _, node2 = peers
    node_addr, published, port = node2.host_addr, free_port(), free_port()
    await _serve(servers, [], node_addr, port, "local")
    await _serve(servers, [], node_addr, port, "local", script=NAME_UDP)
    await _serve(servers, node2.run(), node2.addr, port, "remote", script=NAME_UDP)
    drop = f"table ip gone {{\nchain input {{\ntype filter hook input priority 0;\ntcp dport {port} drop\n}}\n}}\n"
    await run_tool(node2.run("nft", "-f", "-"), stdin=drop.encode())  # the node "went down", for TCP
    local, remote = Backend("n1", "t1", node_addr, port), Backend("n2", "t2", node2.addr, port)
    forwarder = KernelForwarder(f"itestf{os.getpid()}", [node_addr])
    try:
        await forwarder.apply({("tcp", published): Route("tcp", published, "s1", "web", (remote,)),
                               ("udp", published): Route("udp", published, "s2", "dns", (remote,))})
        udp, reply = await asyncio.get_running_loop().create_datagram_endpoint(_Replies,
                                                                               remote_addr=(node_addr, published))
        udp.sendto(b"who")
        assert await asyncio.wait_for(reply.answers.get(), 5) == b"remote"
        connecting = asyncio.create_task(asyncio.open_connection(node_addr, published))
        await asyncio.sleep(0.3)  # its first SYN sent, to the node that does not answer
        await forwarder.apply({("tcp", published): Route("tcp", published, "s1", "web", (local,)),
                               ("udp", published): Route("udp", published, "s2", "dns", (local,))})
        reader, writer = await asyncio.wait_for(connecting, 10)  # the SYN sent again after 1 s
        assert await reader.read() == b"local"
        writer.close()
        udp.sendto(b"who")  # the same flow (client address and port)
        assert await asyncio.wait_for(reply.answers.get(), 5) == b"local"
        udp.close()
        await forwarder.apply({})  # the local TCP backend leaves with nothing unanswered: nothing to forget
        assert "cannot drop" not in caplog.text, caplog.text
    finally:
        await forwarder.remove()


class _Replies(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answers: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.answers.put_nowait(data)


def _nft_children() -> list[int]:
    """This process's `nft` children still running."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(") ", 1)
        except (OSError, ValueError):
            continue  # exited while listed
        if head.split(" (", 1)[1] == "nft" and int(tail.split()[1]) == os.getpid():
            pids.append(int(head.split(" ", 1)[0]))
    return pids


async def _tables() -> str:
    listing = await asyncio.create_subprocess_exec("nft", "list", "tables", stdout=asyncio.subprocess.PIPE)
    return (await listing.communicate())[0].decode()


async def test_a_transaction_cancelled_at_stop_is_over_before_the_table_is_removed() -> None:
    """An agent stopping cancels the mesh mid-transaction, then removes its table: an `nft` left
    running could commit after the removal and leave the table behind. 100 routes keep nft busy
    for tens of milliseconds, and their text (under 64 KiB) is in its pipe at once."""
    backends = (Backend("n1", "t1", "127.0.0.1", 41000), Backend("n2", "t2", "127.0.0.2", 41001))
    table = {("tcp", port): Route("tcp", port, "s1", "web", backends) for port in range(20000, 20100)}
    forwarder = KernelForwarder(f"itestc{os.getpid()}", ["127.0.0.1"])
    apply = asyncio.create_task(forwarder.apply(table))
    try:
        for _ in range(5000):
            if _nft_children() or apply.done():
                break
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.005)  # its input written
        assert not apply.done(), "nft was not seen running"
        apply.cancel()
        with pytest.raises(asyncio.CancelledError):
            await apply
        assert _nft_children() == [], "the cancelled transaction's nft still runs"
        await forwarder.remove()
        assert forwarder.name not in await _tables()
    finally:
        for _ in range(1000):  # an nft left running: let it finish before cleaning up after it
            if not _nft_children():
                break
            await asyncio.sleep(0.01)
        await forwarder.remove()


async def test_an_agent_in_proxy_mode_removes_the_table_a_killed_kernel_mode_run_left(tmp_path: Path) -> None:
    """Switched back to the proxy after a `kill -9` in kernel mode, the node's stale DNAT rules would
    take the published ports' connections from the listeners: the agent deletes them at start."""
    node_id = f"itestp{os.getpid()}"
    (tmp_path / "node-id").write_text(node_id + "\n")
    name = nft.table_name(node_id)
    backend = Backend(node_id, "t1", "127.0.0.1", free_port())
    await run_nft(nft.ruleset(name, ["127.0.0.1"], {("tcp", 30999): Route("tcp", 30999, "s1", "web", (backend,))}))
    assert name in await _tables()
    with nats_server() as nats:
        agent = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.agent", "--nats", nats.url, "--state-dir", str(tmp_path), "--executor",
            "process", "--ingress", "on", "--ingress-mode", "proxy", cwd=ROOT, env=child_env(),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            # It says so once the table is deleted: waiting for the table alone, the agent could be
            # stopped between the two (it was, once, under load).
            await _until_said(agent, ["removed the ingress rules an earlier run in kernel mode left"])
            assert name not in await _tables()
        finally:
            if agent.returncode is None:
                agent.terminate()
            await agent.communicate()
            await run_nft(nft.delete(name))


async def _until_said(agent: asyncio.subprocess.Process, said: list[str], seconds: float = 30) -> None:
    """Read the agent's log until every one of `said` is in it; fail, quoting what it did say, if it
    ends or takes longer."""
    assert agent.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(seconds):
            while not all(any(s in line for line in lines) for s in said):
                line = (await agent.stderr.readline()).decode()
                assert line, f"the agent ended: {''.join(lines)}"
                lines.append(line)
    except TimeoutError:
        pytest.fail(f"the agent did not say {said} within {seconds} s: {''.join(lines)}")


@pytest.mark.parametrize(("env", "said"), [
    ({}, ["the routing mesh is forwarded by the kernel"]),
    ({"PATH": str(Path(sys.executable).parent)},
     ["the routing mesh is forwarded by the agent (proxy mode): kernel mode needs the nft command"]),
], ids=["kernel where it can", "proxy without nft"])
async def test_auto_mode_forwards_in_the_kernel_where_the_agent_can_and_says_which(
        tmp_path: Path, env: dict[str, str], said: list[str]) -> None:
    """The choice, made at start; the kernel e2e tests run clusters in `auto` mode that forward with
    rules (tests/e2e/test_routing_mesh.py)."""
    with nats_server() as nats:
        agent = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.agent", "--nats", nats.url, "--state-dir", str(tmp_path), "--executor",
            "process", "--ingress", "on", "--ingress-mode", "auto", cwd=ROOT, env=child_env(**env),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            await _until_said(agent, said)
        finally:
            if agent.returncode is None:
                agent.terminate()
            await agent.communicate()


@pytest.mark.parametrize(("prefix", "extra", "env", "message"), [
    ((), (), {"PATH": str(Path(sys.executable).parent)}, "--ingress-mode kernel needs the nft command"),
    (("setpriv", "--bounding-set", "-net_admin"), (), {}, "--ingress-mode kernel cannot use nftables"),
    ((), ("--addr", "::1"), {}, "--ingress-mode kernel needs IPv4 node addresses"),
], ids=["no nft", "no CAP_NET_ADMIN", "IPv6"])
def test_an_agent_that_cannot_forward_in_the_kernel_refuses_to_start(
        tmp_path: Path, prefix: tuple[str, ...], extra: tuple[str, ...], env: dict[str, str], message: str) -> None:
    with nats_server() as nats:
        proc = subprocess.run([*prefix, sys.executable, "-m", "services.agent", "--nats", nats.url, "--state-dir",
                               str(tmp_path), "--executor", "process", "--ingress-mode", "kernel", *extra],
                              cwd=ROOT, env=child_env(**env), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert "use --ingress-mode proxy" in proc.stderr
