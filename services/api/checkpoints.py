"""Checkpoints for `/shoal/state?at=`: the whole cluster saved at every multiple of `every`, so a
past state costs the nearest checkpoint at or before it plus fewer than `every` entries, not a
replay from sequence 1.

A checkpoint is an ordinary projection snapshot named for its sequence (`state-at-<seq>`), written
by the queries themselves as their replay passes a multiple of `every`: nothing is paid until an
auditor asks, and each stretch of the log is replayed once. Folding is deterministic, so a state
rebuilt from a checkpoint is the state a full replay gives.
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


def name(seq: int) -> str:
    return f"state-at-{seq}"


class Checkpoints:
    def __init__(self, eventlog: EventLog, store: SnapshotStore | None, every: int = EVERY) -> None:
        self.log = eventlog
        self.store = store
        self.every = every
        self._absent: set[int] = set()
        """Marks known to have no checkpoint (looked up and missed, or unreadable), not asked again."""

    async def state_at(self, seq: int) -> ClusterState:
        """The cluster as of `seq` (which the log must already hold)."""
        state = await self._nearest(seq)
        async for entry in read_until(self.log, state.seq + 1, seq):
            apply_raw(state, entry.seq, entry.data)
            if entry.seq % self.every == 0:
                await self._save(state)
        return state

    async def _nearest(self, seq: int) -> ClusterState:
        if self.store is None:
            return ClusterState()
        for mark in range(seq - seq % self.every, 0, -self.every):
            if mark in self._absent:
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
        try:
            await self.store.save(name(state.seq), snapshot.take(state))
        except Exception as e:  # a missing checkpoint only costs a longer replay later
            log.warning("checkpoint not written", extra={"seq": state.seq, "error": str(e)})
            return
        self._absent.discard(state.seq)
