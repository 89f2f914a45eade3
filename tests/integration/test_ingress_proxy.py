"""The mesh's forwarding shells on loopback sockets: real listeners, real backends, a route the test
changes under them as the event log would."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from typing import cast

import pytest
from prometheus_client import REGISTRY

from services.agent.ingress import udp
from services.agent.ingress.rotation import RoundRobin
from services.agent.ingress.table import Backend, Route
from services.agent.ingress.tcp import TcpListener
from services.agent.ingress.udp import UdpListener
from tests.cluster import free_ports
from tests.loops import on_each_loop


async def _echo_server(name: str) -> tuple[asyncio.Server, int]:
    """Answers each line with `<name>:<line>`; one connection may send many lines."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(f"{name}:".encode() + line)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


class _Routes:
    def __init__(self) -> None:
        self.route: Route | None = None

    def set(self, port: int, *backends: tuple[str, int]) -> None:
        self.route = Route("tcp", port, "svc", "web",
                           tuple(Backend("n1", name, "127.0.0.1", p) for name, p in backends))


@contextlib.asynccontextmanager
async def _backends() -> AsyncIterator[dict[str, int]]:
    servers = {name: await _echo_server(name) for name in ("a", "b")}
    yield {name: port for name, (_, port) in servers.items()}
    for server, _ in servers.values():
        server.close()
        await server.wait_closed()


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, text: str) -> str:
    writer.write(text.encode() + b"\n")
    return (await asyncio.wait_for(reader.readline(), 10)).decode().strip()


@on_each_loop
async def test_tcp_connections_alternate_skip_a_refusing_backend_and_survive_route_changes() -> None:
    async with _backends() as backends:
        await _alternate_skip_and_survive(backends)


async def _alternate_skip_and_survive(backends: dict[str, int]) -> None:
    routes = _Routes()
    port = free_ports(1)
    closed = free_ports(1, "127.0.0.1")  # nothing listens there: refused
    routes.set(port, ("a", backends["a"]), ("dead", closed), ("b", backends["b"]))
    listener = TcpListener("127.0.0.1", port, lambda: routes.route, RoundRobin())
    await listener.open()
    try:
        answers = []
        for _ in range(6):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            answers.append((await _ask(reader, writer, "hi")).split(":")[0])
            writer.close()
        assert answers == ["a", "b", "b", "a", "b", "b"], "every connection answered; dead's turns go to the next"

        # A connection in flight keeps its backend while the route changes and the port is retired.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        first = await _ask(reader, writer, "1")
        routes.set(port, ("b", backends["b"]), ("a", backends["a"]))
        listener.retire()
        assert (await _ask(reader, writer, "2")).split(":")[0] == first.split(":")[0]
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        writer.close()
    finally:
        await listener.close()


@on_each_loop
async def test_tcp_passes_on_what_the_client_sends_and_ends_before_its_backend_is_connected() -> None:
    async with _backends() as backends:
        routes = _Routes()
        port = free_ports(1)
        routes.set(port, ("a", backends["a"]))
        listener = TcpListener("127.0.0.1", port, lambda: routes.route, RoundRobin())
        await listener.open()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"early\n")
            writer.write_eof()  # the backend answers what it got, then sees the EOF and closes
            assert await asyncio.wait_for(reader.read(), 10) == b"a:early\n"
            writer.close()
        finally:
            await listener.close()


@on_each_loop
async def test_tcp_forwards_a_backend_that_speaks_first() -> None:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 ready\n")  # as SMTP or FTP servers do, before the client sends anything
        await reader.read()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    routes = _Routes()
    port = free_ports(1)
    routes.set(port, ("smtp", server.sockets[0].getsockname()[1]))
    listener = TcpListener("127.0.0.1", port, lambda: routes.route, RoundRobin())
    await listener.open()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.readline(), 10) == b"220 ready\n"
        writer.close()
    finally:
        await listener.close()
        server.close()
        await server.wait_closed()


@on_each_loop
async def test_tcp_closes_the_client_when_no_backend_answers() -> None:
    routes = _Routes()
    port = free_ports(1)
    routes.set(port, ("dead", free_ports(1)))
    listener = TcpListener("127.0.0.1", port, lambda: routes.route, RoundRobin())
    await listener.open()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    finally:
        await listener.close()


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, name: str) -> None:
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.name.encode() + b":" + data, addr)


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.replies.put_nowait(data)


async def _udp_echoes() -> tuple[list[asyncio.DatagramTransport], dict[str, Backend]]:
    """Echo servers `a` and `b`, and the backends that reach them."""
    loop = asyncio.get_running_loop()
    echoes = [(await loop.create_datagram_endpoint(functools.partial(_UdpEcho, n), local_addr=("127.0.0.1", 0)))[0]
              for n in ("a", "b")]
    return echoes, {n: Backend("n1", n, "127.0.0.1", t.get_extra_info("sockname")[1])
                    for n, t in zip("ab", echoes, strict=True)}


@on_each_loop
async def test_udp_flows_stick_to_a_backend_and_replies_come_back() -> None:
    loop = asyncio.get_running_loop()
    echoes, backends = await _udp_echoes()
    port = free_ports(1)
    route = Route("udp", port, "svc", "dns", (backends["a"], backends["b"]))
    listener = UdpListener("127.0.0.1", port, lambda: route, RoundRobin())
    await listener.open()
    clients = [await loop.create_datagram_endpoint(_Client, remote_addr=("127.0.0.1", port)) for _ in range(2)]
    try:
        seen: list[bytes] = []
        for transport, client in clients:
            for i in range(3):
                transport.sendto(f"q{i}".encode())
            replies = [await asyncio.wait_for(client.replies.get(), 10) for _ in range(3)]
            names = {r.split(b":")[0] for r in replies}
            assert len(names) == 1, "one flow, one backend"
            seen.extend(names)
        assert sorted(seen) == [b"a", b"b"], "two flows, two backends"
    finally:
        for transport in [*(t for t, _ in clients), *echoes]:
            transport.close()
        await listener.close()


def _unrouted(service: str) -> float:
    return REGISTRY.get_sample_value("shoal_ingress_unrouted_total", {"service": service}) or 0.0


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.02)


@on_each_loop
async def test_a_udp_flow_leaves_a_backend_the_route_dropped_while_the_client_keeps_sending(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(udp, "FLOW_IDLE_S", 1.0)  # sweeps every 0.5 s; the client sends more often than that
    loop = asyncio.get_running_loop()
    echoes, backends = await _udp_echoes()
    port = free_ports(1)
    routes = [Route("udp", port, "svc", "dns", (backends["a"],))]
    listener = UdpListener("127.0.0.1", port, lambda: routes[-1], RoundRobin())
    await listener.open()
    transport, client = await loop.create_datagram_endpoint(_Client, remote_addr=("127.0.0.1", port))
    try:
        transport.sendto(b"q")
        assert await asyncio.wait_for(client.replies.get(), 10) == b"a:q"
        # a's node went down: the table dropped it, but a still answers and no ICMP ends the flow.
        routes.append(Route("udp", port, "svc", "dns", (backends["b"],)))
        deadline = loop.time() + 10
        reply = b""
        while not reply.startswith(b"b:"):
            assert loop.time() < deadline, "the flow stayed on a backend the route no longer has"
            transport.sendto(b"q")
            with contextlib.suppress(TimeoutError):
                reply = await asyncio.wait_for(client.replies.get(), 0.1)
    finally:
        for t in [transport, *echoes]:
            t.close()
        await listener.close()


@on_each_loop
async def test_udp_flows_are_capped_and_a_client_over_the_cap_is_counted_unrouted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(udp, "MAX_FLOWS", 2)
    loop = asyncio.get_running_loop()
    echoes, backends = await _udp_echoes()
    port = free_ports(1)
    route = Route("udp", port, "svc", "capped", (backends["a"], backends["b"]))
    listener = UdpListener("127.0.0.1", port, lambda: route, RoundRobin())
    await listener.open()
    clients = [await loop.create_datagram_endpoint(_Client, remote_addr=("127.0.0.1", port)) for _ in range(3)]
    try:
        for transport, client in clients[:2]:
            transport.sendto(b"q")
            await asyncio.wait_for(client.replies.get(), 10)
        before = _unrouted("capped")
        clients[2][0].sendto(b"q")
        await _until(lambda: _unrouted("capped") == before + 1, "a datagram over the cap is counted unrouted")
        assert len(listener.flows) == 2
        clients[0][0].sendto(b"again")
        assert await asyncio.wait_for(clients[0][1].replies.get(), 10) == b"a:again", "flows in place still work"
    finally:
        for t in [*(t for t, _ in clients), *echoes]:
            t.close()
        await listener.close()


@on_each_loop
async def test_a_udp_flow_ended_while_its_socket_opens_leaves_no_socket_and_retire_cancels_opens() -> None:
    echoes, backends = await _udp_echoes()
    port = free_ports(1)
    route = Route("udp", port, "svc", "dns", (backends["a"],))
    listener = UdpListener("127.0.0.1", port, lambda: route, RoundRobin())
    await listener.open()
    try:
        # A datagram opens a flow; its backend socket opens in a task that has not run yet.
        listener.datagram_received(b"q", ("127.0.0.1", 9))
        flow = listener.flows[("127.0.0.1", 9)]
        listener.end(("127.0.0.1", 9))
        await _until(lambda: flow.transport is not None, "the socket still opens")
        assert flow.transport is not None and flow.transport.is_closing(), "a socket opened late is closed"

        listener.datagram_received(b"q", ("127.0.0.1", 10))
        flow = listener.flows[("127.0.0.1", 10)]
        opening = set(listener._opening)
        listener.retire()  # the mesh forgets a retired UDP listener: nothing else would cancel its opens
        await asyncio.gather(*opening, return_exceptions=True)
        assert opening and all(t.cancelled() for t in opening)
        assert flow.transport is None
    finally:
        for t in echoes:
            t.close()
        await listener.close()
