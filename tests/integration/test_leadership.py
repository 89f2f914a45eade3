"""Leader election and fencing: against the in-memory log and a real nats-server (the writer), and
a real JetStream KV lease (the election).

The property that matters: once a newer leader's `LeaderElected` is in the log, nothing an earlier
leader appends is stored, however late it arrives, while ordinary compare-and-set conflicts inside
a fenced batch stay conflicts (catch up, decide again) and never look like a lost election.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from nats.aio.client import Client

from schemas.codec import decode
from schemas.events import LeaderElected, ServiceCreated
from schemas.service import ServiceSpec
from services.kernel import lease as lease_module
from services.kernel import subjects
from services.kernel.eventlog import Conflict, EventLog
from services.kernel.jetstream import JetStreamLog, connect, ensure_stream
from services.kernel.lease import Leadership, Lease, ensure_bucket
from services.kernel.projection import Projection
from services.kernel.state import ClusterState
from services.kernel.writer import Deposed, Intent, Term, Writer
from tests.nats_server import NatsServer


def _create(name: str, expect: int | None = None) -> Intent:
    ev = ServiceCreated(service_id=f"svc-{name}", spec=ServiceSpec(name=name))
    return Intent(ev, expect_seq=expect, expect_subject=subjects.SERVICE_SPECS if expect is not None else None)


async def _elect(log: EventLog, loop: str, term: int) -> Term:
    scope = subjects.leader_term(loop)
    last = await log.last_seq(scope)
    [seq] = await Writer(log, loop).append(
        [Intent(LeaderElected(loop=loop, term=term, holder=f"h{term}"), expect_seq=last, expect_subject=scope)],
        ClusterState())
    assert isinstance(seq, int)
    return Term(loop, term, seq)


async def _names(log: EventLog) -> list[str]:
    out = []
    for seq in range(1, await log.last_seq() + 1):
        entry = await log.get(seq)
        assert entry is not None
        ev = decode(entry.data).event
        if isinstance(ev, ServiceCreated):
            out.append(ev.spec.name)
    return out


async def test_fenced_writes_land_while_the_term_is_the_newest(eventlog: EventLog) -> None:
    writer = Writer(eventlog, "orchestrator", await _elect(eventlog, "orchestrator", 10))
    results = await writer.append([_create("a"), _create("b")], ClusterState())
    assert all(isinstance(r, int) for r in results)
    assert await _names(eventlog) == ["a", "b"]


async def test_a_late_write_of_an_ex_leader_is_refused(eventlog: EventLog) -> None:
    old = Writer(eventlog, "orchestrator", await _elect(eventlog, "orchestrator", 10))
    await _elect(eventlog, "orchestrator", 11)  # a new leader took office while the old one was paused
    with pytest.raises(Deposed):
        await old.append([_create("late")], ClusterState())
    assert await _names(eventlog) == []


async def test_a_newer_term_of_another_loop_does_not_fence(eventlog: EventLog) -> None:
    writer = Writer(eventlog, "scheduler", await _elect(eventlog, "scheduler", 3))
    await _elect(eventlog, "orchestrator", 99)
    [result] = await writer.append([_create("a")], ClusterState())
    assert isinstance(result, int)


async def test_a_conflict_in_a_fenced_batch_refuses_the_batch_but_is_no_deposition(eventlog: EventLog) -> None:
    writer = Writer(eventlog, "orchestrator", await _elect(eventlog, "orchestrator", 10))
    results = await writer.append([_create("a"), _create("b", expect=12345)], ClusterState())
    assert all(isinstance(r, Conflict) for r in results)
    assert await _names(eventlog) == []


# -- the election, on a real KV lease ------------------------------------------------------------


class Contender:
    """One process's side of the election, in-process: own connection, own projection."""

    def __init__(self, leadership: Leadership, projection: Projection) -> None:
        self.leadership = leadership
        self.projection = projection
        self.leading = asyncio.Event()
        self.stopped = asyncio.Event()
        self.writer: Writer | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.leadership.run(self.lead))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.projection.stop()

    async def lead(self, writer: Writer) -> None:
        self.writer = writer
        self.leading.set()
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self.leading.clear()
            self.stopped.set()


class _LaggingProjection(Projection):
    """A projection that catches up `lag_s` late the first time it is waited for, as a loaded
    process folding a long log does when it has just won the lease."""

    lag_s = 0.0

    async def wait_for(self, seq: int) -> None:
        lag, self.lag_s = self.lag_s, 0.0
        await asyncio.sleep(lag)
        await super().wait_for(seq)


async def _contender(url: str, name: str, ttl_s: int = 1, lag_s: float = 0.0) -> tuple[Client, Contender]:
    nc = await connect([url], name)
    await ensure_stream(nc, "SHOAL")
    await ensure_bucket(nc)
    log = JetStreamLog(nc, "SHOAL", ack_timeout=1.0)
    projection = _LaggingProjection(log)
    await projection.start()
    projection.lag_s = lag_s
    lease = Lease(nc, "orchestrator", name, ttl_s=ttl_s)
    return nc, Contender(Leadership(lease, log, projection, "orchestrator"), projection)


@contextlib.asynccontextmanager
async def contenders(nats: NatsServer, count: int, ttl_s: int = 1) -> AsyncIterator[
        tuple[list[Contender], Callable[[Contender], Awaitable[None]]]]:
    conns = []
    out: list[Contender] = []
    for i in range(count):
        nc, c = await _contender(nats.url, f"c{i}", ttl_s)
        conns.append(nc)
        c.start()
        out.append(c)

    async def crash(c: Contender) -> None:
        """As `kill -9` would: the connection drops, nothing is released."""
        assert c.task is not None
        await conns[out.index(c)].close()
        c.task.cancel()
        await asyncio.gather(c.task, return_exceptions=True)

    try:
        yield out, crash
    finally:
        for c in out:
            await c.stop()
        for nc in conns:
            await nc.close()


async def _one_leader(cs: list[Contender], timeout_s: float = 10.0) -> Contender:
    async with asyncio.timeout(timeout_s):
        await asyncio.wait([asyncio.ensure_future(c.leading.wait()) for c in cs],
                           return_when=asyncio.FIRST_COMPLETED)
    leaders = [c for c in cs if c.leading.is_set()]
    assert len(leaders) == 1, f"{len(leaders)} leaders"
    return leaders[0]


async def test_one_leader_then_a_standby_takes_over_after_a_crash(nats: NatsServer) -> None:
    async with contenders(nats, 3) as (cs, crash):
        first = await _one_leader(cs)
        await asyncio.sleep(0.5)  # renewals keep it: no second leader appears
        assert [c for c in cs if c.leading.is_set()] == [first]
        await crash(first)
        second = await _one_leader([c for c in cs if c is not first])
        assert second.writer is not None and first.writer is not None
        assert second.writer.term is not None and first.writer.term is not None
        assert second.writer.term.term > first.writer.term.term
        assert second.writer.actor == f"orchestrator:{second.writer.term.term}"  # the term, in every envelope
        leaders = second.projection.state.leaders
        assert leaders["orchestrator"].term == second.writer.term.term


async def test_a_paused_ex_leader_is_deposed_and_its_late_write_refused(nats: NatsServer) -> None:
    async with contenders(nats, 2) as (cs, _):
        first = await _one_leader(cs)
        old_writer = first.writer
        assert old_writer is not None
        # a pause longer than the TTL: the lease lapses and the standby wins, as if the leader froze
        first.leadership.lease.ttl_s = 30  # it stops renewing in time
        other = next(c for c in cs if c is not first)
        async with asyncio.timeout(10):
            await other.leading.wait()
            await first.stopped.wait()  # it sees the newer term in the log and stops at once
        with pytest.raises(Deposed):
            await old_writer.append([_create("late")], first.projection.state)
        assert "late" not in await _names(first.leadership.log)


class _CancelOnReply(dict[str, "asyncio.Future[Any]"]):
    """nats-py's map of requests awaiting replies: the next reply to land cancels `task` once, in the
    same turn of the loop (from the reply's own done callback), which is when Python 3.11's
    `asyncio.wait_for` inside nats-py's request drops the cancellation (gh-86296)."""

    def __init__(self, task: asyncio.Task[None], entries: dict[str, asyncio.Future[Any]]) -> None:
        super().__init__(entries)
        self.task: asyncio.Task[None] | None = task

    def __setitem__(self, token: str, future: asyncio.Future[Any]) -> None:
        super().__setitem__(token, future)
        future.add_done_callback(self._cancel)

    def _cancel(self, _: asyncio.Future[Any]) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()


async def test_a_standby_cancelled_as_a_lease_reply_lands_stops(nats: NatsServer) -> None:
    """A standby polls for the lease; a stop that came with one of the replies was dropped, the
    standby polled on and the stop waited for ever (a CI teardown, past its 2-minute limit)."""
    async with contenders(nats, 2) as (cs, _):
        leader = await _one_leader(cs)
        standby = next(c for c in cs if c is not leader)
        assert standby.task is not None
        nc = standby.leadership.lease.nc
        nc._resp_map = _CancelOnReply(standby.task, nc._resp_map)
        await asyncio.wait([standby.task], timeout=5)
        assert standby.task.cancelled(), "the standby carried on after it was cancelled"


async def test_a_leader_that_stops_cleanly_hands_over_without_waiting_for_the_ttl(nats: NatsServer) -> None:
    async with contenders(nats, 2, ttl_s=30) as (cs, _):
        first = await _one_leader(cs)
        assert first.task is not None
        first.task.cancel()  # SIGTERM: the term ends and the lease is released
        await asyncio.gather(first.task, return_exceptions=True)
        second = await _one_leader([c for c in cs if c is not first], timeout_s=10)  # far less than the TTL
        assert second is not first


async def test_a_renewal_whose_acknowledgement_was_lost_does_not_end_the_term(nats: NatsServer) -> None:
    """A loaded leader's renewal can time out waiting for its acknowledgement yet land: the next
    renewal, naming the older revision, is refused by the leader's own write, not by a rival's."""
    async with contenders(nats, 1, ttl_s=2) as ([leader], _):
        await _one_leader([leader])
        lease = leader.leadership.lease
        renewed, landed = await lease._put(lease.revision)  # the renewal whose answer never arrived
        assert renewed and landed > lease.revision
        async with asyncio.timeout(10):
            while lease.revision <= landed:  # the refused renewal is recognised as ours, renewals go on
                assert not leader.stopped.is_set(), "the leader gave up a lease it still holds"
                await asyncio.sleep(0.05)
        assert leader.leading.is_set()


def busy(seconds: float) -> None:
    """A leader's event loop held by one long decision on loaded cores: nothing else runs in it."""
    time.sleep(seconds)


async def test_a_leader_whose_event_loop_is_busy_for_a_while_keeps_its_term(nats: NatsServer) -> None:
    """Renewals run in a thread of their own: three TTLs without the event loop are not a lapse."""
    async with contenders(nats, 2) as (cs, _):
        first = await _one_leader(cs)
        assert first.writer is not None and first.writer.term is not None
        term = first.writer.term.term
        busy(3)
        await asyncio.sleep(1.5)  # the standby polls again meanwhile: the key is still held
        assert [c for c in cs if c.leading.is_set()] == [first] and not first.stopped.is_set()
        assert first.writer is not None and first.writer.term is not None and first.writer.term.term == term


async def test_a_leader_whose_event_loop_is_stuck_lets_the_lease_go(nats: NatsServer,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lease_module, "STALLED_TTLS", 2)
    async with contenders(nats, 2) as (cs, _):
        first = await _one_leader(cs)
        assert first.writer is not None and first.writer.term is not None
        term = first.writer.term.term
        busy(4)  # past 2 TTLs: the keeper stops renewing, the key expires a TTL later
        async with asyncio.timeout(10):
            await first.stopped.wait()  # its term ended (it may well win the next one: it is alive)
        leader = await _one_leader(cs)
        assert leader.writer is not None and leader.writer.term is not None and leader.writer.term.term > term


class _Relay:
    """A TCP relay to the server whose connections can be cut one at a time, new ones refused, or
    slowed down (every byte each way held for `delay_s[link]`, in order)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: asyncio.Server | None = None
        self.links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.delay_s: list[float] = []
        self.pipes: set[asyncio.Task[None]] = set()
        self.linked = asyncio.Condition()

    async def open(self) -> str:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"nats://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        link = len(self.links)
        self.links.append((writer, up_writer))
        self.delay_s.append(0.0)
        async with self.linked:
            self.linked.notify_all()
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
            for pipe in (asyncio.ensure_future(self._read(src, held, link)),
                         asyncio.ensure_future(self._write(held, dst))):
                self.pipes.add(pipe)
                pipe.add_done_callback(self.pipes.discard)

    async def _read(self, src: asyncio.StreamReader, held: asyncio.Queue[tuple[float, bytes]], link: int) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                held.put_nowait((time.monotonic() + self.delay_s[link], data))
        held.put_nowait((0.0, b""))

    @staticmethod
    async def _write(held: asyncio.Queue[tuple[float, bytes]], dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                due, data = await held.get()
                if not data:
                    break
                await asyncio.sleep(due - time.monotonic())
                dst.write(data)
                await dst.drain()
        dst.close()

    async def wait_links(self, count: int) -> None:
        async with self.linked:
            await self.linked.wait_for(lambda: len(self.links) >= count)

    def cut(self, index: int) -> None:
        """Drop one link and refuse new connections: the others stay up."""
        assert self.server is not None
        self.server.close()
        for w in self.links[index]:
            w.close()

    async def close(self) -> None:
        for pipe in list(self.pipes):
            pipe.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)
        for pair in self.links:
            for w in pair:
                w.close()


@contextlib.asynccontextmanager
async def _relayed_leader(nats: NatsServer) -> AsyncIterator[tuple[_Relay, Contender, Contender]]:
    """A leader connected through a relay (link 0 its own connection, link 1 its keeper's), and a
    standby connected directly, contending."""
    relay = _Relay(nats.port)
    leader_nc, leader = await _contender(await relay.open(), "relayed")
    standby_nc, standby = await _contender(nats.url, "standby")
    try:
        leader.start()
        await _one_leader([leader])
        async with asyncio.timeout(5):  # the keeper connects once the lease is won
            await relay.wait_links(2)
        standby.start()
        yield relay, leader, standby
    finally:
        for c, nc in ((leader, leader_nc), (standby, standby_nc)):
            await c.stop()
            with contextlib.suppress(OSError):  # a cut connection cannot flush on close
                await nc.close()
        await relay.close()


async def test_a_leader_cut_off_from_the_server_lets_the_lease_go_though_its_keeper_is_connected(
        nats: NatsServer) -> None:
    """The keeper renews on a connection of its own (perhaps to another server of a cluster); a
    leader that can no longer read or write over its own connection must not hold the lease."""
    async with _relayed_leader(nats) as (relay, leader, standby):
        relay.cut(0)  # the leader's own connection: it cannot reconnect; the keeper's stays up
        async with asyncio.timeout(10):
            await standby.leading.wait()
            await leader.stopped.wait()


async def test_a_leader_whose_renewals_answer_slowly_keeps_its_term(nats: NatsServer) -> None:
    """A loaded server or process answers a renewal late: with 0.2 s each way (a 0.4 s round trip,
    more than TTL/3) every renewal still lands well within the TTL, so the term must not end."""
    async with _relayed_leader(nats) as (relay, leader, standby):
        relay.delay_s[1] = 0.2  # the keeper's connection only: the leader's own stays quick
        await asyncio.sleep(5)
        assert leader.leading.is_set() and not leader.stopped.is_set(), "a slow renewal ended the term"
        assert not standby.leading.is_set()


async def test_a_leader_slow_to_catch_up_when_it_wins_keeps_the_term(nats: NatsServer) -> None:
    """The lease is renewed from the moment it is won: a catch-up longer than the TTL before the
    term is written must not let the key lapse and end the term as soon as it has begun."""
    nc, leader = await _contender(nats.url, "lagging", lag_s=2.5)
    try:
        leader.start()
        await _one_leader([leader])
        assert leader.writer is not None and leader.writer.term is not None
        term = leader.writer.term.term
        await asyncio.sleep(2)
        assert leader.leading.is_set() and not leader.stopped.is_set(), "the term ended as it began"
        assert leader.writer.term is not None and leader.writer.term.term == term
    finally:
        await leader.stop()
        await nc.close()
