"""Leader election for the deciding loops: a lease in a JetStream KV bucket, and the terms it gives.

The lease is one key per loop in `SHOAL_LEASES` (history 1). It is won by a compare-and-set create
(expected last subject sequence 0) and kept by a compare-and-set update naming the revision the
holder last wrote, every TTL/3; each write carries a per-key `Nats-TTL`, so a holder that stops
renewing (killed, paused, cut off) loses the key TTL later and a standby's next create wins it.
The writes are raw publishes to `$KV.<bucket>.<key>`: nats-py's `update()` cannot set a TTL.

A lease alone is not safety: a paused ex-leader does not know it lost. `Leadership` turns the won
revision into a term in the log (`LeaderElected`, written only if every earlier term is lower) and
hands the loop a `Writer` fenced on that entry, so the server refuses the ex-leader's late batches.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import RawStreamMsg

from schemas.events import LeaderElected
from services.kernel import subjects
from services.kernel.eventlog import Conflict, EventLog, LogUnavailable
from services.kernel.jetstream import WRONG_LAST, connect, last_seq_from
from services.kernel.metrics import LEADER, LEADER_CHANGES
from services.kernel.process import Runtime
from services.kernel.projection import Projection
from services.kernel.writer import Deposed, Intent, Term, Writer

log = logging.getLogger(__name__)

BUCKET = "SHOAL_LEASES"
DEFAULT_TTL_S = 1
"""Whole seconds: nats-server truncates `Nats-TTL` to seconds (1500ms lives 1 s). Takeover after a
leader's crash is at most this plus one poll and a catch-up (goal: <= 2 s in all)."""
STALLED_TTLS = 10
"""A leader whose event loop has not run for this many TTLs lets its lease lapse (raft's election
timeout is ten ticks too)."""


async def ensure_bucket(nc: Client, replicas: int = 1) -> None:
    js = nc.jetstream()
    try:
        await js.key_value(BUCKET)
    except nats.js.errors.BucketNotFoundError:
        await js.create_key_value(bucket=BUCKET, history=1, replicas=replicas)


_PROCESS_NONCE = secrets.token_hex(4)
"""Drawn once per process: two processes in containers sharing the host's network (and so its
hostname) can have the same pid in their own pid namespaces."""


def holder_id() -> str:
    """`host/pid/nonce`: readable as which process holds the lease, unique even where pids repeat."""
    return f"{socket.gethostname()}/{os.getpid()}/{_PROCESS_NONCE}"


class Lease:
    """One loop's lease. `acquire` returns the revision won; `keep` returns when it is lost."""

    def __init__(self, nc: Client, loop: str, holder: str, ttl_s: int = DEFAULT_TTL_S, poll_s: float = 0.05) -> None:
        self.nc = nc
        self.loop = loop
        self.holder = holder
        self.ttl_s = ttl_s
        self.poll_s = poll_s
        self.subject = f"$KV.{BUCKET}.{loop}"
        self._ttl = f"{ttl_s}s"
        self.revision = 0
        """The key's revision we last wrote (it changes at every renewal; the term does not)."""
        self._won_at = 0.0
        """When the write that won the key was sent (monotonic): it lives at least a TTL from then."""
        self._alive = 0.0
        """When the leader's event loop last ran (monotonic), for the keeper thread."""
        self._cut_off_since: float | None = None
        """Since when the leader's own connection has been seen down (monotonic); None: up."""

    async def acquire(self) -> int:
        """Poll the create: watchers hear of an expiry late (nats-rules 9), a create wins at once.
        A key released on a clean stop holds a delete marker: that revision may be overwritten."""
        expect, checked = 0, 0
        while True:
            try:
                sent = time.monotonic()
                won, revision = await self._put(expect)
                if won:
                    self.revision, self._won_at = revision, sent
                    return revision
                revision = revision or await self._last_revision()
                if revision and revision != checked:
                    checked = revision
                    expect = revision if await self._released(revision) else 0
                    continue
                expect = 0
            except LogUnavailable as e:
                log.debug("lease unavailable", extra={"loop": self.loop, "error": str(e)})
            await asyncio.sleep(self.poll_s)

    async def _last(self) -> RawStreamMsg | None:
        try:
            return await self.nc.jetstream().get_last_msg(f"KV_{BUCKET}", self.subject)
        except nats.js.errors.NotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as e:
            raise LogUnavailable(repr(e)) from e

    async def _last_revision(self) -> int:
        """The key's revision, when a refusal did not name it (a replicated bucket's does not)."""
        msg = await self._last()
        return int(msg.seq or 0) if msg is not None else 0

    async def _held_by_us(self) -> int:
        """The key's revision if its newest write is still this holder's (a renewal whose
        acknowledgement timed out on a loaded process but landed), else 0."""
        msg = await self._last()
        if msg is None or msg.data != self.holder.encode() or _deleted(msg):
            return 0
        return int(msg.seq or 0)

    async def _released(self, revision: int) -> bool:
        try:
            msg = await self.nc.jetstream().get_msg(f"KV_{BUCKET}", revision)
        except nats.js.errors.NotFoundError:
            return False
        except (nats.errors.Error, TimeoutError) as e:
            raise LogUnavailable(repr(e)) from e
        return _deleted(msg)

    async def keep(self) -> None:
        """Renew every TTL/3 until a renewal is refused (someone else holds it) or none succeeded for
        a whole TTL (measured from sending the last good one, so the server expired it no earlier).

        The renewals run in a thread of their own (own event loop, own connection), so a leader whose
        event loop is busy for a moment (one long decision on loaded cores) keeps its lease, as raft's
        heartbeats are not held up by the work they protect. The thread renews only while this loop
        still runs: one stuck for `STALLED_TTLS` TTLs lets the lease go like a dead leader. Nor does it
        renew for a leader whose own connection has been down for a TTL (it can neither read the log
        nor write, and the keeper's connection may be to another server): that lease lapses as it did
        when renewals shared the connection. A killed or paused process stops both, so failover
        still takes a TTL."""
        stop = _Stop()
        ended: concurrent.futures.Future[None] = concurrent.futures.Future()
        servers = [url.geturl() for url in self.nc.servers]

        def renew() -> None:
            try:
                asyncio.run(self._renew(servers, stop))
            except Exception as e:  # e.g. no connection to be had: the lease is as good as lost
                log.warning("lease keeper failed", extra={"loop": self.loop, "error": repr(e)})
            ended.set_result(None)

        self._alive = time.monotonic()
        threading.Thread(target=renew, name=f"lease-{self.loop}", daemon=True).start()
        done = asyncio.wrap_future(ended)
        try:
            while not done.done():
                self._alive = time.monotonic()
                if self.nc.is_connected:
                    self._cut_off_since = None
                elif self._cut_off_since is None:
                    self._cut_off_since = self._alive
                await asyncio.wait([done], timeout=self.ttl_s / 3)
        finally:
            stop.set()
            await asyncio.wait([done])  # the renewals have stopped before the term's `release`

    async def _renew(self, servers: list[str], stop: _Stop) -> None:
        """The renewal loop, in the keeper thread; `self.revision` is read back once it has ended."""
        stopping = stop.bind()
        try:
            # Bounded: a connect retrying for ever would hold `keep` (and the term's end) with it.
            async with asyncio.timeout(self.ttl_s):
                nc = await connect(servers, f"lease-{self.loop}")
            try:
                await self._renew_via(Lease(nc, self.loop, self.holder, self.ttl_s), stopping)
            finally:
                await nc.close()
        finally:
            stop.unbind()  # this loop is about to close: nothing may be scheduled on it any more

    async def _renew_via(self, via: Lease, stopping: asyncio.Event) -> None:
        """Every TTL/3 through `via` (the thread's connection), until the lease is lost or `stopping`.

        The key lives a TTL from when the server stores a renewal, so at least a TTL from when the
        last good one was sent (`good_until`): each renewal waits for its answer until then, not
        just TTL/3. A slow round trip (a loaded server or process) is not a lost lease; one that
        no answer came for by then is, as is a refusal by another holder's write. The next renewal
        is due TTL/3 after the last was sent, so a slow answer does not push it back."""
        now = time.monotonic
        good_until = self._won_at + self.ttl_s
        due = self._won_at + self.ttl_s / 3  # the keeper's connection may have taken that long already
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, due - now())):
                    await stopping.wait()
            if stopping.is_set():
                return
            if now() - self._alive > STALLED_TTLS * self.ttl_s:
                log.warning("event loop stalled: letting the lease go", extra={"loop": self.loop})
                return
            cut_off = self._cut_off_since
            if cut_off is not None and now() - cut_off > self.ttl_s:
                log.warning("leader's connection lost: letting the lease go", extra={"loop": self.loop})
                return
            sent = now()
            try:
                async with asyncio.timeout(good_until - sent):
                    renewed, revision = await via._put(self.revision, within_s=good_until - sent)
                    if not renewed:  # refused: by someone else's write, or by our own late renewal
                        revision = await via._held_by_us()
            except (LogUnavailable, TimeoutError) as e:
                if now() >= good_until:
                    log.warning("lease not renewed within its TTL", extra={"loop": self.loop, "error": repr(e)})
                    return
                due = now() + self.poll_s  # e.g. refused at once (JetStream not ready): soon again
                continue
            if not revision:
                log.warning("lease taken by another process", extra={"loop": self.loop})
                return
            self.revision = revision
            if renewed:  # when our late renewal landed is unknown: its TTL is not counted
                good_until = sent + self.ttl_s
            due = sent + self.ttl_s / 3

    async def release(self) -> None:
        """When a term ends: mark the key deleted (if we still hold it) so a standby wins now rather
        than a TTL later."""
        revision, self.revision = self.revision, 0
        if revision:
            with contextlib.suppress(LogUnavailable):
                await self._put(revision, {"KV-Operation": "DEL"})

    async def _put(self, expect: int, extra: dict[str, str] | None = None,
                   within_s: float | None = None) -> tuple[bool, int]:
        """(True, new revision) or (False, the key's current revision); answered within `within_s`
        (default TTL/3)."""
        headers = {"Nats-Expected-Last-Subject-Sequence": str(expect), "Nats-TTL": self._ttl, **(extra or {})}
        try:
            msg = await self.nc.request(self.subject, self.holder.encode(), headers=headers,
                                        timeout=self.ttl_s / 3 if within_s is None else within_s)
        except (nats.errors.Error, TimeoutError) as e:
            raise LogUnavailable(repr(e)) from e
        try:
            reply = json.loads(msg.data)
        except ValueError as e:
            raise LogUnavailable("unreadable lease acknowledgement") from e
        error = reply.get("error")
        if not error:
            return True, int(reply["seq"])
        if error.get("err_code") in WRONG_LAST:  # a replicated bucket does not say which revision
            return False, max(last_seq_from(error.get("description")), 0)
        raise LogUnavailable(f"lease write refused: {error.get('description')}")


class _Stop:
    """Tells the keeper thread's event loop to stop, from the leader's loop, at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._wake: Callable[[], None] | None = None

    def bind(self) -> asyncio.Event:
        """In the keeper thread: the event `set` will set there (already set if it was)."""
        event = asyncio.Event()
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(event.set)

        with self._lock:
            self._wake = wake
            if self._set:
                event.set()
        return event

    def unbind(self) -> None:
        with self._lock:
            self._wake = None

    def set(self) -> None:
        with self._lock:
            self._set = True
            if self._wake is not None:
                self._wake()


def _deleted(msg: RawStreamMsg) -> bool:
    return (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE")


Lead = Callable[[Writer], Awaitable[None]]
"""The loop's work while leading, given a writer fenced on the term; cancelled when the term ends."""


class Leadership:
    """Stand by, win the lease, take office, lead until the term ends, stand by again; forever."""

    def __init__(self, lease: Lease, eventlog: EventLog, projection: Projection, actor: str, addr: str = "") -> None:
        self.lease = lease
        self.log = eventlog
        self.projection = projection
        self.actor = actor
        self.addr = addr
        self.loop = lease.loop
        self.term: Term | None = None
        self._newer = asyncio.Event()
        projection.listeners.append(self._on_event)
        LEADER.labels(loop=self.loop).set(0)

    def _on_event(self, seq: int, env: msgspec.Struct) -> None:
        ev = getattr(env, "event", None)
        term = self.term
        if isinstance(ev, LeaderElected) and ev.loop == self.loop and term is not None and ev.term > term.term:
            self._newer.set()

    async def run(self, lead: Lead) -> None:
        while True:
            revision = await self.lease.acquire()
            # Renewals start at the win, not once in office: catching up with a long log on a loaded
            # process can take longer than the TTL, and a key that lapsed meanwhile ended the term
            # as soon as it had begun (a full pass for nothing, and another election).
            keeping = asyncio.ensure_future(self.lease.keep())
            try:
                try:
                    self.term = await self._take_office(revision, keeping)
                except (Deposed, LogUnavailable) as e:
                    log.info("could not take office", extra={"loop": self.loop, "error": str(e)})
                    continue
                LEADER.labels(loop=self.loop).set(1)
                LEADER_CHANGES.labels(loop=self.loop).inc()
                log.info("leading", extra={"loop": self.loop, "term": revision, "seq": self.term.seq})
                try:
                    await self._serve(lead(Writer(self.log, f"{self.actor}:{revision}", self.term)), keeping)
                finally:
                    LEADER.labels(loop=self.loop).set(0)
                    self.term = None
                log.info("standing by", extra={"loop": self.loop, "term": revision})
            finally:
                keeping.cancel()
                await asyncio.gather(keeping, return_exceptions=True)
                await self.lease.release()

    async def _take_office(self, revision: int, keeping: asyncio.Future[None]) -> Term:
        """`_write_term`, unless the lease is lost first (`keeping` ends)."""
        office = asyncio.ensure_future(self._write_term(revision))
        try:
            either: list[asyncio.Future[Any]] = [office, keeping]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not office.done():
                office.cancel()
                await asyncio.gather(office, return_exceptions=True)
        if office.cancelled():
            raise LogUnavailable("the lease was lost while taking office")
        return office.result()

    async def _write_term(self, revision: int) -> Term:
        """Catch up with the whole log, then write `LeaderElected` after the last term entry, which
        must be older: terms only grow in the log, so fencing on ours shuts out every earlier one."""
        scope = subjects.leader_term(self.loop)
        await self.projection.wait_for(await self.log.last_seq())
        while True:
            last = await self.log.last_seq(scope)
            await self.projection.wait_for(last)
            current = self.projection.state.leaders.get(self.loop)
            if current is not None and current.term >= revision:
                raise Deposed(f"{self.loop}: term {current.term} is already in the log")
            event = LeaderElected(loop=self.loop, term=revision, holder=self.lease.holder, addr=self.addr)
            [result] = await Writer(self.log, self.actor).append(
                [Intent(event, expect_seq=last, expect_subject=scope)], self.projection.state)
            if not isinstance(result, Conflict):
                await self.projection.wait_for(result)
                return Term(self.loop, revision, result)

    async def _serve(self, work: Awaitable[None], keeping: asyncio.Future[None]) -> None:
        """Until the lease is lost (`keeping` ends), a newer term shows up in the log, or the work
        stops (a fenced write refused raises `Deposed` out of it); the others are cancelled at once."""
        self._newer.clear()
        tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(work), keeping,
                                            asyncio.ensure_future(self._newer.wait())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if tasks[0] in done and not tasks[0].cancelled() and (error := tasks[0].exception()) is not None:
            if not isinstance(error, Deposed):
                raise error
            log.warning("deposed", extra={"loop": self.loop, "error": str(error)})


async def elect(rt: Runtime, projection: Projection, lead: Lead) -> None:
    """Run `lead` whenever this process leads the loop named after it (`rt.name`), forever."""
    await ensure_bucket(rt.nc, rt.common.replicas)
    lease = Lease(rt.nc, rt.name, holder_id(), rt.common.lease_ttl_s)
    await Leadership(lease, rt.log, projection, rt.name, rt.metrics_addr).run(lead)
