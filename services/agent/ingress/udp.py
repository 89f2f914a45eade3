"""UDP forwarding per datagram flow.

A flow is one client address: its first datagram picks a backend (round robin) and opens a socket
connected to it; later datagrams of the flow go the same way, and the backend's replies come back
from the published port. A flow idle for `FLOW_IDLE_S` is forgotten. UDP has no refusal to skip on
connect; an ICMP error (the backend's port is closed) ends the flow, so the next datagram of that
client picks another backend. A backend that left the route (its node went down: no ICMP comes back)
loses its flows at the next sweep, so a client that keeps sending moves to a live one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import cast

from services.agent.ingress.metrics import BACKEND_FAILURES, BYTES, CONNECTIONS, UNROUTED
from services.agent.ingress.rotation import RoundRobin
from services.agent.ingress.table import Backend, Route

log = logging.getLogger(__name__)

FLOW_IDLE_S = 30.0
_QUEUED_MAX = 64
"""Datagrams kept for a flow whose backend socket is still opening; more are dropped, as a full
socket buffer would."""
MAX_FLOWS = 4096
"""Flows one listener keeps at once. Each holds a socket and lives `FLOW_IDLE_S`, so without a cap a
flood from many source addresses would exhaust the agent's file descriptors; a new client over the cap
is dropped (counted as unrouted) until flows end."""

Address = tuple[str, int]


class _Flow(asyncio.DatagramProtocol):
    def __init__(self, listener: UdpListener, client: Address, service: str, backend: Backend) -> None:
        self.listener, self.client, self.backend = listener, client, backend
        self.service = service
        self.transport: asyncio.DatagramTransport | None = None
        self.queued: list[bytes] = []
        self.closed = False
        """Ended while its socket may still be opening: a late socket is closed on arrival."""
        self.seen = time.monotonic()
        self._in = BYTES.labels(service=service, backend=backend.node_id, direction="in")
        self._out = BYTES.labels(service=service, backend=backend.node_id, direction="out")

    def send(self, data: bytes) -> None:
        self.seen = time.monotonic()
        self._in.inc(len(data))
        if self.transport is not None:
            self.transport.sendto(data)
        elif len(self.queued) < _QUEUED_MAX:
            self.queued.append(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        if self.closed:
            self.transport.close()
            return
        for data in self.queued:
            self.transport.sendto(data)
        self.queued.clear()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.seen = time.monotonic()
        self._out.inc(len(data))
        self.listener.reply(data, self.client)

    def error_received(self, exc: Exception) -> None:
        if self.closed:  # the client may have a newer flow by now: leave it be
            return
        BACKEND_FAILURES.labels(service=self.service, backend=self.backend.node_id).inc()
        log.info("ingress UDP backend error; the flow will pick another",
                 extra={"service": self.service, "task_id": self.backend.task_id, "error": str(exc)})
        self.listener.end(self.client)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UdpListener(asyncio.DatagramProtocol):
    """One published UDP port on one node address."""

    def __init__(self, addr: str, port: int, lookup: Callable[[], Route | None], rotation: RoundRobin) -> None:
        self.addr, self.port = addr, port
        self.lookup = lookup
        self.rotation = rotation
        self.flows: dict[Address, _Flow] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._opening: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(self.addr, self.port))
        self._sweeper = loop.call_later(FLOW_IDLE_S / 2, self._sweep)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        flow = self.flows.get(addr) or self._new_flow(addr)
        if flow is not None:
            flow.send(data)

    def _new_flow(self, client: Address) -> _Flow | None:
        route = self.lookup()
        full = len(self.flows) >= MAX_FLOWS
        order = self.rotation.order(route) if route is not None and not full else []
        if route is None or not order:
            UNROUTED.labels(service=route.service_name if route is not None else "").inc()
            return None
        flow = self.flows[client] = _Flow(self, client, route.service_name, order[0])
        CONNECTIONS.labels(service=route.service_name, backend=order[0].node_id).inc()
        task = asyncio.get_running_loop().create_task(self._connect(flow))
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)
        return flow

    async def _connect(self, flow: _Flow) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_datagram_endpoint(lambda: flow, remote_addr=(flow.backend.addr, flow.backend.port))
        except OSError as e:
            flow.error_received(e)

    def reply(self, data: bytes, client: Address) -> None:
        if self._transport is not None:
            self._transport.sendto(data, client)

    def end(self, client: Address) -> None:
        flow = self.flows.pop(client, None)
        if flow is not None:
            flow.close()

    def _sweep(self) -> None:
        idle_since = time.monotonic() - FLOW_IDLE_S
        route = self.lookup()
        live = set(route.backends) if route is not None else set()
        for client in [c for c, f in self.flows.items() if f.seen < idle_since or f.backend not in live]:
            self.end(client)
        self._sweeper = asyncio.get_running_loop().call_later(FLOW_IDLE_S / 2, self._sweep)

    def retire(self) -> None:
        """The port is no longer published: flows end with it (their replies leave through it)."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for client in list(self.flows):
            self.end(client)
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in self._opening:
            task.cancel()

    async def close(self) -> None:
        self.retire()
        await asyncio.gather(*self._opening, return_exceptions=True)
