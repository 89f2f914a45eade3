"""The routing mesh's shell: follows the whole event log and keeps one listener per ingress port
on each of this agent's node addresses.

The table is rebuilt from the projection after every applied batch of events (the listeners read it
at each new connection), so a task leaves rotation as soon as this agent folds its desired shutdown and
joins it as soon as its running status arrives. A port that cannot be bound (something else holds it)
is logged and retried every few seconds.

In kernel mode (`kernel`, `--ingress-mode kernel`) the same table becomes the node's nftables rules
instead of listeners: no process forwards a byte. A transaction that fails is logged and retried like
a port that cannot be bound, and the rules' counters are read into the metrics every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import msgspec

from services.agent.ingress.kernel import COUNT_EVERY_S, KernelForwarder, NftError
from services.agent.ingress.metrics import LISTENERS
from services.agent.ingress.rotation import RoundRobin
from services.agent.ingress.table import Key, Route, Table, build
from services.agent.ingress.tcp import TcpListener
from services.agent.ingress.udp import UdpListener
from services.kernel.eventlog import EventLog
from services.kernel.ports import TCP
from services.kernel.projection import Projection
from services.kernel.snapshot import SnapshotStore

log = logging.getLogger(__name__)

BIND_RETRY_S = 5.0

Listener = TcpListener | UdpListener
Where = tuple[str, str, int]
"""(node address, protocol, published port)."""


class Mesh:
    def __init__(self, eventlog: EventLog, addrs: Sequence[str], *, snapshots: SnapshotStore | None = None,
                 snapshot_name: str = "", kernel: KernelForwarder | None = None) -> None:
        self.projection = Projection(eventlog, snapshots=snapshots, snapshot_name=snapshot_name)
        self.addrs = sorted(set(addrs))
        self.table: Table = {}
        self.rotation = RoundRobin()
        self.listeners: dict[Where, Listener] = {}
        self.retired: list[Listener] = []
        self.kernel = kernel
        self._changed = asyncio.Event()

    async def run(self) -> None:
        """Run until cancelled; then every listener and forwarded connection is closed."""
        try:
            await self.projection.start()
            self.projection.listeners.append(self._on_event)
            while True:
                self._changed.clear()
                self.table = build(self.projection.state)
                complete = await (self._reconcile() if self.kernel is None else self._apply(self.kernel))
                wait = BIND_RETRY_S if not complete else None if self.kernel is None else COUNT_EVERY_S
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._changed.wait()
        finally:
            await self._close()

    def route(self, key: Key) -> Route | None:
        return self.table.get(key)

    def _on_event(self, seq: int, env: msgspec.Struct) -> None:
        self._changed.set()

    async def _apply(self, kernel: KernelForwarder) -> bool:
        try:
            await kernel.apply(self.table)
            await kernel.count(every=COUNT_EVERY_S)
        except NftError as e:
            log.warning("cannot apply or read the ingress rules; retrying",
                        extra={"table": kernel.name, "error": str(e)})
            return False
        return True

    async def _reconcile(self) -> bool:
        """Open the listeners the table needs, retire the others; False if a port could not be bound."""
        wanted = {(addr, proto, port) for proto, port in self.table for addr in self.addrs}
        for where in set(self.listeners) - wanted:
            listener = self.listeners.pop(where)
            listener.retire()
            self.retired.append(listener)
            log.info("ingress port closed", extra={"addr": where[0], "protocol": where[1], "port": where[2]})
        complete = True
        for where in sorted(wanted - set(self.listeners)):
            complete = await self._open(where) and complete
        self.retired = [r for r in self.retired if isinstance(r, TcpListener) and r.connections]
        LISTENERS.set(len(self.listeners))
        return complete

    async def _open(self, where: Where) -> bool:
        addr, proto, port = where
        key = (proto, port)
        kind = TcpListener if proto == TCP else UdpListener
        listener = kind(addr, port, lambda: self.route(key), self.rotation)
        try:
            await listener.open()
        except OSError as e:
            log.warning("cannot listen on an ingress port; retrying",
                        extra={"addr": addr, "protocol": proto, "port": port, "error": str(e)})
            return False
        self.listeners[where] = listener
        log.info("ingress port open", extra={"addr": addr, "protocol": proto, "port": port})
        return True

    async def _close(self) -> None:
        for listener in [*self.listeners.values(), *self.retired]:
            await listener.close()
        self.listeners.clear()
        self.retired.clear()
        LISTENERS.set(0)
        if self.kernel is not None:
            try:
                await self.kernel.remove()
            except NftError as e:
                log.error("cannot remove the ingress rules", extra={"table": self.kernel.name, "error": str(e)})
        await self.projection.stop()
