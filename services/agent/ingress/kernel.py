"""The kernel forwarding mode's shell: applies `nft.ruleset` with `nft -f -`, run as a subprocess of
the event loop (a transaction takes milliseconds, but the agent's loop also heartbeats and must never
wait on it), and only when the ruleset text changed.

`nft` rather than netlink from Python: it is the tool operators read the rules with, its text is the
unit-tested output, and a whole-table transaction is one process start per rotation change (rare
next to the connections it forwards).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections import Counter

import msgspec

from services.agent.ingress import conntrack, nft
from services.agent.ingress.metrics import ACTIVE, BACKEND_FAILURES, BYTES, CONNECTIONS, UNROUTED
from services.agent.ingress.table import Table

log = logging.getLogger(__name__)

NFT = "nft"
CONNTRACK = "conntrack"
COUNT_EVERY_S = 5.0
"""How often the rules' counters are read into the metrics (and before every change of the rules)."""


class NftError(RuntimeError):
    """`nft` (or `conntrack`) failed; the message is its stderr."""


async def run_nft(script: str) -> None:
    """One atomic `nft -f -` transaction, over when this returns or raises. Cancelled (the agent
    stopping), it kills `nft` and waits for it: left running, its transaction could commit after the
    next one (the table's removal at stop) and leave the table behind."""
    await run_tool([NFT, "-f", "-"], script.encode())


async def run_tool(argv: list[str], stdin: bytes | None = None) -> bytes:
    """`argv`'s output; NftError with its stderr if it fails. A command given no input gets none (a
    pipe it never reads can be closed under the write: uvloop then raises RuntimeError)."""
    try:  # e.g. nft removed since the start check, or no fork to be had: retried like a refusal
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as e:
        raise NftError(f"cannot run {argv[0]}: {e}") from e
    try:
        out, err = await proc.communicate(stdin)
    except (asyncio.CancelledError, RuntimeError, OSError) as e:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        if isinstance(e, asyncio.CancelledError):
            raise
        raise NftError(f"{argv[0]} ended before reading its input ({e})") from e
    if proc.returncode != 0:
        raise NftError(err.decode().strip() or f"{argv[0]} exited {proc.returncode}")
    return out


async def unusable(addrs: list[str]) -> str | None:
    """Why this process cannot forward in the kernel for these node addresses, or None if it can."""
    try:
        nft.check_addrs(addrs)
    except ValueError as e:
        return f"needs IPv4 node addresses ({e})"
    if shutil.which(NFT) is None:
        return "needs the nft command (Debian's nftables), which is not on PATH"
    try:
        await run_nft("list tables\n")
    except NftError as e:
        return f"cannot use nftables ({e})"
    return None


async def check(addrs: list[str]) -> None:
    """SystemExit saying what to do unless this process can manage nftables for these addresses: an
    agent asked for kernel mode stops at start rather than run a mesh that forwards nothing."""
    if (why := await unusable(addrs)) is not None:
        raise SystemExit(f"--ingress-mode kernel {why}: run the agent as root (CAP_NET_ADMIN) with nftables "
                         "installed and an IPv4 --addr, or use --ingress-mode proxy")


def warn_without_conntrack() -> None:
    if shutil.which(CONNTRACK) is None:
        log.warning("no conntrack command: in kernel mode the mesh's active connections are not counted, and "
                    "connections to a backend that left are not moved on; install conntrack (Debian's "
                    "conntrack package) to have both")


async def choose(mode: str, addrs: list[str]) -> bool:
    """Whether the mesh forwards in the kernel: asked for (`kernel`, or SystemExit if it cannot), or
    wherever it can (`auto`, said in the log either way)."""
    if mode == "proxy":
        return False
    if mode == "kernel":
        await check(addrs)
    elif (why := await unusable(addrs)) is not None:
        log.info("the routing mesh is forwarded by the agent (proxy mode): kernel mode " + why)
        return False
    else:
        log.info("the routing mesh is forwarded by the kernel (nftables; --ingress-mode proxy to have the agent "
                 "forward)")
    warn_without_conntrack()
    return True


async def remove_left_behind(node_id: str) -> None:
    """Delete the node's table if an earlier run in kernel mode left it (`kill -9`) and this one does
    not forward in the kernel (proxy mode, or no mesh): its DNAT rules see every connection to the
    published ports before the listeners do and would send them to that run's backends. Done where
    this process can (`nft` installed, CAP_NET_ADMIN); silently skipped where it cannot, as it is
    where kernel mode was never used."""
    if shutil.which(NFT) is None:
        return
    name = nft.table_name(node_id)
    try:
        await run_nft(f"delete table ip {name}\n")  # fails if there is none, or without the capability
    except NftError:
        return
    log.warning("removed the ingress rules an earlier run in kernel mode left", extra={"table": name})


class KernelForwarder:
    """Keeps the node's nftables table equal to the ingress table, and exports what its rules count
    as the proxy's metrics."""

    def __init__(self, node_id: str, addrs: list[str]) -> None:
        self.name = nft.table_name(node_id)
        self.addrs = addrs
        self.applied: str | None = None
        self.table: Table = {}
        self.seen: Counter[nft.CountKey] = Counter()
        self.counted_at = 0.0
        self.active: set[str] = set()
        self.conntrack_failed = False

    async def apply(self, table: Table) -> None:
        """Replace the node's table (a stale one from an earlier run included) if the rules changed;
        what the old rules counted is read first, since their counters go with them."""
        text = nft.ruleset(self.name, self.addrs, table)
        if text == self.applied:
            return
        if self.applied is not None:  # not a table an earlier run left: its counts are not this run's
            with contextlib.suppress(NftError):  # a table someone removed has nothing left to read
                await self._read_counters()
        await run_nft(text)
        before, self.table = self.table, table
        self.applied = text
        self.seen.clear()
        await self._forget(conntrack.departed(before, table))
        left_out = nft.unreachable(table)
        log.info("ingress rules applied", extra={"table": self.name, "routes": len(table),
                                                 "backends": sum(len(r.backends) for r in table.values())
                                                 - len(left_out)})
        if left_out:
            log.warning("backends on nodes without an IPv4 address left out of the ingress rules",
                        extra={"table": self.name, "backends": [f"{b.task_id}@{b.addr}" for b in left_out][:10],
                               "count": len(left_out)})

    async def count(self, every: float = 0.0) -> None:
        """Add to the metrics what the rules counted since they were last read, unless that was less
        than `every` seconds ago (reading is an `nft` run, cheap but not free). A table that cannot be
        read (someone ran `nft flush ruleset`) is applied again at the next `apply`."""
        now = time.monotonic()
        if self.applied is None or now - self.counted_at < every:
            return
        self.counted_at = now
        await self._read_counters()
        await self._count_active()

    async def _read_counters(self) -> None:
        try:
            listing = await run_tool([NFT, "-j", "list", "table", "ip", self.name])
        except NftError:
            self.applied = None
            raise
        try:
            counts = nft.counts(listing)
        except msgspec.DecodeError as e:  # an nft whose JSON is not shaped like 1.0's (ValidationError too)
            raise NftError(f"cannot read nft's listing: {e}") from e
        for (kind, service, node), value in counts.items():
            added = value - self.seen[(kind, service, node)]
            if added <= 0:
                continue
            if kind == "unrouted":
                UNROUTED.labels(service=service).inc(added)
            elif kind in ("in", "out"):
                BYTES.labels(service=service, backend=node, direction=kind).inc(added)
            else:
                metric = CONNECTIONS if kind == "forwarded" else BACKEND_FAILURES
                metric.labels(service=service, backend=node).inc(added)
        self.seen = counts

    async def _forget(self, departed: list[conntrack.Endpoint]) -> None:
        """Make conntrack forget what it would keep sending to backends that left (`conntrack.forget`)."""
        if not departed or shutil.which(CONNTRACK) is None:
            return
        for protocol, addr, port in departed:
            try:
                await run_tool([CONNTRACK, *conntrack.forget((protocol, addr, port))])
            except NftError as e:
                if conntrack.NONE_DELETED in str(e):  # conntrack exits 1 when nothing matched
                    continue
                log.warning("cannot drop the connections of a backend that left",
                            extra={"backend": f"{addr}:{port}/{protocol}", "error": str(e)})

    async def _count_active(self) -> None:
        """The active connections gauge, from conntrack's table (the rules cannot count what ends)."""
        if shutil.which(CONNTRACK) is None:
            return
        try:  # filtered by the kernel where it can: a node's table may hold many other connections
            listing = b"".join([await run_tool([CONNTRACK, *conntrack.established_on(addr)]) for addr in self.addrs])
        except NftError as e:
            if not self.conntrack_failed:
                log.warning("cannot count the mesh's active connections", extra={"error": str(e)})
            self.conntrack_failed = True
            return
        self.conntrack_failed = False
        active = conntrack.established(listing.decode(errors="replace"), self.addrs, self.table)
        for service in self.active | set(active):
            ACTIVE.labels(service=service).set(active[service])
        self.active |= set(active)

    async def remove(self) -> None:
        await run_nft(nft.delete(self.name))
        self.applied = None
        log.info("ingress rules removed", extra={"table": self.name})
