"""Checkpoints for `/shoal/state?at=`: the whole cluster saved at multiples of `every`, so a past
state costs the nearest checkpoint at or before it plus the entries after it (fewer than `every`
for a recent one), not a replay from sequence 1.

A checkpoint is an ordinary projection snapshot named for its sequence (`state-at-<seq>`), written
by the queries themselves as their replay passes a multiple of `every`: nothing is paid until an
auditor asks, and each stretch of the log is replayed once. Folding is deterministic, so a state
rebuilt from a checkpoint is the state a full replay gives.

Checkpoints are pruned (`kept`): the newest `KEEP_RECENT` stay, older ones thin out with age (every
2nd, then every 4th, 8th ...). The store holds `KEEP_RECENT / 2` more per doubling of the log (62
for a billion entries), and a question about an old point starts from a checkpoint less than a
third of its distance from the newest one further back.
"""

from __future__ import annotations

import logging

import msgspec
import nats.errors

from services.api.history import read_until
from services.kernel import snapshot
from services.kernel.eventlog import EventLog
from services.kernel.fold import apply_raw
from services.kernel.snapshot import SnapshotStore
from services.kernel.state import ClusterState

log = logging.getLogger(__name__)

EVERY = 10_000
KEEP_RECENT = 8
PREFIX = "state-at-"


def name(seq: int) -> str:
    return f"{PREFIX}{seq}"


def kept(mark: int, newest: int, every: int, recent: int = KEEP_RECENT) -> bool:
    """Pure: whether the checkpoint at `mark` stays while `newest` is the newest. The step between
    kept checkpoints doubles each time their age does, in powers of two, so a checkpoint dropped is
    never wanted again as the log grows: deleting it is final."""
    age = (newest - mark) // every
    if age < recent:
        return True
    step = 1 << (age // recent).bit_length()
    return (mark // every) % step == 0


class Checkpoints:
    def __init__(self, eventlog: EventLog, store: SnapshotStore | None, every: int = EVERY) -> None:
        self.log = eventlog
        self.store = store
        self.every = every
        self._absent: set[int] = set()
        """Marks known to have no checkpoint (looked up and missed, or unreadable), not asked again."""
        self._newest: int | None = None
        """The newest mark in the store, read from it before the first save."""

    async def state_at(self, seq: int) -> ClusterState:
        """The cluster as of `seq` (which the log must already hold)."""
        state = await self._nearest(seq)
        async for entry in read_until(self.log, state.seq + 1, seq):
            apply_raw(state, entry.seq, entry.data, entry.subject)
            if entry.seq % self.every == 0:
                await self._save(state)
        return state

    async def _nearest(self, seq: int) -> ClusterState:
        if self.store is None:
            return ClusterState()
        newest = await self._known_newest(self.store)
        for mark in range(seq - seq % self.every, 0, -self.every):
            if mark in self._absent or not kept(mark, newest, self.every):
                continue
            try:
                data = await self.store.load(name(mark))
            except (nats.errors.Error, TimeoutError) as e:  # the store is away: a full replay still answers
                log.warning("checkpoint store unavailable, replaying from the start", extra={"error": str(e)})
                return ClusterState()
            if data is not None:
                try:
                    return snapshot.restore(data)
                except (msgspec.DecodeError, msgspec.ValidationError) as e:
                    log.warning("checkpoint unreadable, using an earlier one", extra={"seq": mark, "error": str(e)})
            self._absent.add(mark)
        return ClusterState()

    async def _save(self, state: ClusterState) -> None:
        if self.store is None:
            return
        newest = await self._known_newest(self.store)
        if not kept(state.seq, newest, self.every):
            return  # a replay of an old stretch: the checkpoint there was pruned on purpose
        frozen = snapshot.freeze(state)  # encoded a step at a time, as a projection's snapshots are
        try:
            await self.store.save(name(frozen.seq), await snapshot.encode_in_steps(frozen))
        except Exception as e:  # a missing checkpoint only costs a longer replay later
            log.warning("checkpoint not written", extra={"seq": state.seq, "error": str(e)})
            return
        self._absent.discard(state.seq)
        if state.seq > newest:
            self._newest = state.seq
            await self._prune(self.store, state.seq)

    async def _known_newest(self, store: SnapshotStore) -> int:
        if self._newest is None:
            self._newest = max(await _marks(store), default=0)
        return self._newest

    async def _prune(self, store: SnapshotStore, newest: int) -> None:
        for mark in await _marks(store):
            if not kept(mark, newest, self.every):
                try:
                    await store.delete(name(mark))
                except Exception as e:  # left for the next prune; it costs only space
                    log.warning("checkpoint not pruned", extra={"seq": mark, "error": str(e)})
                    return
                self._absent.add(mark)


async def _marks(store: SnapshotStore) -> list[int]:
    """The sequences the store holds checkpoints for ([] if it cannot say)."""
    try:
        names = await store.names(PREFIX)
    except Exception as e:  # an unlisted store only costs lookups and space
        log.warning("checkpoints not listed", extra={"error": str(e)})
        return []
    return [int(n.removeprefix(PREFIX)) for n in names if n.removeprefix(PREFIX).isdigit()]
