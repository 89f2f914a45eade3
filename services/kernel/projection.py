"""A projection: a `ClusterState` kept current by following the log.

Every process owns one. Start-up is snapshot + tail; `start()` returns once the projection has
caught up with the log as it was at start, so nobody decides on a stale view. `wait_for(seq)` is
read-your-writes: after appending, wait until the fold has applied that sequence.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections.abc import Callable

import msgspec
import nats.errors

from schemas.codec import decode
from services.kernel import snapshot
from services.kernel.eventlog import Entry, EventLog, Following
from services.kernel.fold import apply
from services.kernel.ids import parse_ns
from services.kernel.snapshot import SnapshotStore
from services.kernel.state import ClusterState
from services.kernel.subjects import ALL, Filter
from services.kernel.traces import TraceIndex

log = logging.getLogger(__name__)

LOOKUPS_IN_FLIGHT = 4
"""Catch-up targets of a many-filter projection asked at once. When a node filter was a wildcard
lookup (`task.*.<node>.>`, ~55 ms of server time at 100,000 tasks, the layout before
`assigned.<node>.>`), a sim agent of 250 nodes asking all at once left the last ones queued past
the 5 s request timeout, and its start failed; the bound keeps any filter's lookups from doing so."""


class Projection:
    def __init__(
        self,
        eventlog: EventLog,
        *,
        filter_subject: Filter = ALL,
        snapshots: SnapshotStore | None = None,
        snapshot_name: str = "",
        snapshot_every: int = 10_000,
        track_changes: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.log = eventlog
        self.filter = filter_subject
        self.snapshots = snapshots
        self.snapshot_name = snapshot_name
        self.snapshot_every = snapshot_every
        """A snapshot is taken after at least this many entries, and at least as many as the last
        snapshot held tasks: taking one costs in proportion to the state (every task is encoded and
        stored, ~4 us and ~700 bytes each), so at a fixed interval the cost per entry grew with the
        cluster. This way each snapshot's cost is spread over at least as many entries as it held
        tasks, and start-up still replays a tail bounded by the cluster's size (1.5 x its tasks at
        most, see `_snapshot_after`), not the log's age."""
        self._rng = rng or random.Random()
        self._snapshot_after = 0
        """Entries the next snapshot waits for at least: the last one's tasks, stretched by 1 to 1.5 at
        random. Every manager process folds the same log, so with the same rule all four wrote a
        snapshot of the same size at the same entry: at 100,000 tasks ~230 MB for nats-server to store
        at once, behind which a leader's lease renewal timed out. The stretch spreads them apart."""
        self.state = ClusterState()
        self.state.track_changes = track_changes
        self.pending = 0
        self.last_event_time = ""
        """`Time` of the newest applied event, kept as written: parsing it per event cost more than
        decoding and folding the event together (strptime, ~9 us), and it is read far less often."""
        self.updated = asyncio.Event()
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_count = 0
        self._following: Following | None = None
        self._since_snapshot = 0
        self._snapshot_task: asyncio.Task[None] | None = None
        self.listeners: list[Callable[[int, msgspec.Struct], None]] = []
        self.traces: TraceIndex | None = None
        """Set by whoever writes in reaction to what it folds, so its writes continue the same traces."""
        self.fold_seconds = 0.0
        """Time spent decoding and folding entries, for `shoal_fold_seconds_total`."""

    @property
    def last_event_ns(self) -> int:
        """The newest applied event's time in ns since the epoch; 0 before any, or if unreadable."""
        try:
            return parse_ns(self.last_event_time) if self.last_event_time else 0
        except ValueError:
            return 0

    async def start(self) -> None:
        if self.snapshots is not None and self.snapshot_name:
            await self._restore()
        target = await self._last_seq()
        self._following = await self.log.follow(self.filter, self.state.seq + 1, self._on_entry)
        await self.wait_for(target)
        log.info("projection caught up", extra={"seq": self.state.seq, "filter": self.filter})

    async def _last_seq(self) -> int:
        """Where catching up ends: the newest entry the filter matches."""
        if self.filter == ALL:
            return await self.log.last_seq()
        if isinstance(self.filter, str):
            return await self.log.last_seq(self.filter)
        slots = asyncio.Semaphore(LOOKUPS_IN_FLIGHT)

        async def last(f: str) -> int:
            async with slots:
                return await self.log.last_seq(f)

        return max(await asyncio.gather(*(last(f) for f in self.filter)), default=0)

    async def _restore(self) -> None:
        assert self.snapshots is not None
        started = time.perf_counter()
        try:
            data = await self.snapshots.load(self.snapshot_name)
        except (nats.errors.Error, TimeoutError) as e:  # e.g. a JetStream cluster still electing leaders
            log.warning("snapshot unavailable, replaying from the start", extra={"error": repr(e)})
            return
        if data is None:
            return
        try:
            restored = snapshot.restore(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            log.warning("snapshot unreadable, replaying from the start", extra={"error": str(e)})
            return
        restored.track_changes = self.state.track_changes
        self.state = restored
        self._snapshot_after = self._stretched(len(restored.tasks))
        log.info("snapshot loaded", extra={"seq": restored.seq, "seconds": time.perf_counter() - started})

    def _on_entry(self, entry: Entry) -> None:
        state = self.state
        self.pending = entry.pending
        if entry.seq <= state.seq:
            return
        started = time.perf_counter()
        try:
            env = decode(entry.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            state.seq = entry.seq
            state.stats.skipped += 1
            log.warning("skipped unreadable entry", extra={"seq": entry.seq, "subject": entry.subject})
        else:
            apply(state, entry.seq, env, entry.subject)
            self.fold_seconds += time.perf_counter() - started
            if self.traces is not None and entry.pending < self.traces.capacity:
                self.traces.record(entry.seq, env.event, entry.headers)
            for listener in self.listeners:
                listener(entry.seq, env)
            self.last_event_time = env.time
        self.updated.set()
        self._wake(entry.seq)
        self._since_snapshot += 1
        if (self._since_snapshot >= self.snapshot_every and self._since_snapshot >= self._snapshot_after
                and self.snapshots is not None and self.snapshot_name):
            self._snapshot_soon()

    def _wake(self, seq: int) -> None:
        waiters = self._waiters
        while waiters and waiters[0][0] <= seq:
            _, _, fut = heapq.heappop(waiters)
            if not fut.done():
                fut.set_result(None)

    async def wait_for(self, seq: int) -> None:
        """Return once the fold has applied `seq` (at once if it already has); callers bound the wait."""
        if seq <= self.state.seq:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter_count += 1
        heapq.heappush(self._waiters, (seq, self._waiter_count, fut))
        await fut

    def _stretched(self, tasks: int) -> int:
        return int(tasks * self._rng.uniform(1.0, 1.5))

    def _snapshot_soon(self) -> None:
        if self._snapshot_task is not None and not self._snapshot_task.done():
            return
        self._since_snapshot = 0
        self._snapshot_after = self._stretched(len(self.state.tasks))
        frozen = snapshot.freeze(self.state)
        self._snapshot_task = asyncio.get_running_loop().create_task(self._save(frozen))

    async def _save(self, frozen: snapshot.Frozen) -> None:
        """Encoded a step at a time: at 100,000 tasks, encoding in one go held every entry and pass
        of this process back for 0.3-0.7 s (docs/performance.md, session 12)."""
        assert self.snapshots is not None
        try:
            data = await snapshot.encode_in_steps(frozen)
            await self.snapshots.save(self.snapshot_name, data)
            log.info("snapshot written", extra={"seq": frozen.seq, "bytes": len(data)})
        except Exception as e:  # a failed snapshot only costs start-up time later
            log.warning("snapshot failed", extra={"error": str(e)})

    async def save_snapshot(self) -> None:
        """Write a snapshot now (on clean shutdown), so the next start replays almost nothing."""
        if self.snapshots is not None and self.snapshot_name:
            await self._save(snapshot.freeze(self.state))

    async def stop(self) -> None:
        if self._following is not None:
            await self._following.stop()
        if self._snapshot_task is not None:
            self._snapshot_task.cancel()
