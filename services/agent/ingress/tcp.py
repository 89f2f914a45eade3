"""TCP forwarding with asyncio protocols.

Bytes go from one transport to the other in the callback that received them (no stream objects, no
coroutine per direction), and a side whose write buffer fills pauses the other side's reading
(back-pressure). A connection picks its backend when it arrives: the route's backends in round-robin
order, the next one tried when one refuses or does not answer; the client's first bytes wait (reading
paused) until a backend is connected. A connection keeps its backend for life, so changes to the
route (a task added, a listener closed) never touch connections in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, cast

from prometheus_client import Counter

from services.agent.ingress.metrics import ACTIVE, BACKEND_FAILURES, BYTES, CONNECTIONS, UNROUTED
from services.agent.ingress.rotation import RoundRobin
from services.agent.ingress.table import Backend, Route

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0
_REPORT_BYTES = 1 << 20
Lookup = Callable[[], Route | None]
"""The port's route as the table holds it now."""


class _Side(asyncio.Protocol):
    """One end of a forwarded connection: what it receives, its peer sends."""

    def __init__(self, conn: _Connection, received: Counter | None, peer: _Side | None) -> None:
        self.conn = conn
        self.received = received
        self.unreported = 0
        """Bytes not yet added to `received`: a counter update per chunk would cost a lock each time."""
        self.transport: asyncio.Transport | None = None
        self.peer = peer
        self.eof = False
        self.full = False
        """Its transport's write buffer is over the high-water mark: its peer's reading is paused."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.peer.transport is not None
        self.peer.transport.write(data)
        self.unreported += len(data)
        if self.unreported >= _REPORT_BYTES:
            self.report()

    def report(self) -> None:
        if self.received is not None and self.unreported:
            self.received.inc(self.unreported)
        self.unreported = 0

    def eof_received(self) -> bool:
        """Half-close: pass the EOF on and keep the other direction open until it ends too."""
        self.eof = True
        peer = self.peer
        if peer is None or peer.transport is None or peer.eof or not peer.transport.can_write_eof():
            self.conn.close()
            return False
        peer.transport.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.close()

    def pause_writing(self) -> None:
        self.full = True
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.full = False
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _ClientSide(_Side):
    """The accepted end: what it receives before a backend is connected waits, its reading paused.

    asyncio starts reading before `connection_made` and honours a pause there; uvloop starts reading
    after it, so the first bytes can still arrive early: they are held and the pause taken then.
    """

    def __init__(self, conn: _Connection) -> None:
        super().__init__(conn, None, None)
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()
        self.conn.listener.spawn(self.conn.connect())

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            assert self.transport is not None
            self.early.append(data)
            self.transport.pause_reading()
        else:
            super().data_received(data)

    def eof_received(self) -> bool:
        if self.peer is None:  # passed on once a backend is connected
            self.eof = True
            return True
        return super().eof_received()

    def link(self, backend: _Side) -> None:
        """Forward to `backend` from now on, what arrived early first."""
        assert backend.transport is not None and self.transport is not None
        self.peer = backend
        for data in self.early:
            backend.transport.write(data)
            self.unreported += len(data)
        self.early.clear()
        if self.eof:
            self.eof = False
            self.eof_received()
        elif not backend.full:  # the early bytes filled it: its resume_writing resumes us
            self.transport.resume_reading()


class _Connection:
    """A client connection and, once one answered, its backend."""

    def __init__(self, listener: TcpListener, service: str, order: list[Backend]) -> None:
        self.listener = listener
        self.service = service
        self.order = order
        self.client = _ClientSide(self)
        self.backend: _Side | None = None
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for side in (self.client, self.backend):
            if side is not None:
                side.report()
                if side.transport is not None:
                    side.transport.close()
        if self.backend is not None:
            ACTIVE.labels(service=self.service).dec()
        self.listener.connections.discard(self)

    async def connect(self) -> None:
        for backend in self.order:
            if self.closed:
                return
            try:
                await self._link(backend)
                return
            except (OSError, TimeoutError) as e:
                BACKEND_FAILURES.labels(service=self.service, backend=backend.node_id).inc()
                log.info("ingress backend refused; trying another",
                         extra={"service": self.service, "task_id": backend.task_id, "error": str(e)})
        UNROUTED.labels(service=self.service).inc()
        self.close()

    async def _link(self, backend: Backend) -> None:
        loop = asyncio.get_running_loop()
        side = _Side(self, BYTES.labels(service=self.service, backend=backend.node_id, direction="out"), self.client)
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await loop.create_connection(lambda: side, backend.addr, backend.port)
        if self.closed:
            assert side.transport is not None
            side.transport.close()
            return
        self.client.received = BYTES.labels(service=self.service, backend=backend.node_id, direction="in")
        self.backend = side
        CONNECTIONS.labels(service=self.service, backend=backend.node_id).inc()
        ACTIVE.labels(service=self.service).inc()
        self.client.link(side)


class TcpListener:
    """One published TCP port on one node address."""

    def __init__(self, addr: str, port: int, lookup: Lookup, rotation: RoundRobin) -> None:
        self.addr, self.port = addr, port
        self.lookup = lookup
        self.rotation = rotation
        self.connections: set[_Connection] = set()
        self._connecting: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, self.addr, self.port, reuse_address=True, backlog=1024)

    def _accept(self) -> asyncio.Protocol:
        route = self.lookup()
        if route is None:
            conn = _Connection(self, "", [])
        else:
            conn = _Connection(self, route.service_name, self.rotation.order(route))
        self.connections.add(conn)
        return conn.client

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    def retire(self) -> None:
        """No new connections; the ones in flight carry on."""
        if self._server is not None:
            self._server.close()
            self._server = None

    async def close(self) -> None:
        """Stop listening and end every connection (the agent is stopping)."""
        self.retire()
        for task in list(self._connecting):
            task.cancel()
        await asyncio.gather(*self._connecting, return_exceptions=True)
        for conn in list(self.connections):
            conn.close()
