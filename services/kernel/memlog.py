"""An in-memory `EventLog` with the same semantics as the JetStream one, for fast tests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from services.kernel.eventlog import Append, AppendResult, Conflict, Entry, Following, OnEntry
from services.kernel.subjects import Filter, matches, matches_filter


class _Follower:
    def __init__(self, log: MemoryLog, filter_subject: Filter, on_entry: OnEntry) -> None:
        self.log = log
        self.filter = filter_subject
        self.on_entry = on_entry
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            index = await self.queue.get()
            stored = self.log.entries[index]
            pending = sum(1 for e in self.log.entries[index + 1 :] if matches_filter(self.filter, e.subject))
            result = self.on_entry(
                Entry(seq=stored.seq, subject=stored.subject, data=stored.data, headers=stored.headers,
                      pending=pending)
            )
            if result is not None:
                await result

    async def stop(self) -> None:
        self.task.cancel()
        self.log.followers.discard(self)


class MemoryLog:
    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.msg_ids: dict[str, int] = {}
        self.followers: set[_Follower] = set()

    async def append(self, batch: Sequence[Append]) -> list[AppendResult]:
        return [self._append_one(a) for a in batch]

    async def append_atomic(self, batch: Sequence[Append]) -> list[AppendResult]:
        """Checks every compare-and-set against the log as it was before the batch, as nats-server
        does; a batch holding an id already stored is refused whole (a retry of a stored batch)."""
        if any(a.msg_id in self.msg_ids for a in batch):
            return [Conflict(a.subject, len(self.entries)) for a in batch]
        for a in batch:
            if a.expect_seq is not None:
                last = self._last(a.expect_subject or a.subject)
                if last != a.expect_seq:
                    return [Conflict(b.subject, last) for b in batch]
        return [self._store(a) for a in batch]

    def _append_one(self, a: Append) -> AppendResult:
        if a.msg_id in self.msg_ids:
            return self.msg_ids[a.msg_id]
        if a.expect_seq is not None:
            last = self._last(a.expect_subject or a.subject)
            if last != a.expect_seq:
                return Conflict(a.subject, last)
        return self._store(a)

    def _store(self, a: Append) -> int:
        seq = len(self.entries) + 1
        self.entries.append(Entry(seq=seq, subject=a.subject, data=a.data, headers=a.headers, pending=0))
        self.msg_ids[a.msg_id] = seq
        for f in self.followers:
            if matches_filter(f.filter, a.subject):
                f.queue.put_nowait(seq - 1)
        return seq

    def _last(self, filter_subject: str) -> int:
        for e in reversed(self.entries):
            if matches(filter_subject, e.subject):
                return e.seq
        return 0

    async def last_seq(self, filter_subject: str | None = None) -> int:
        return self._last(filter_subject) if filter_subject else len(self.entries)

    async def follow(self, filter_subject: Filter, start_seq: int, on_entry: OnEntry) -> Following:
        f = _Follower(self, filter_subject, on_entry)
        for e in self.entries[max(start_seq, 1) - 1 :]:
            if matches_filter(filter_subject, e.subject):
                f.queue.put_nowait(e.seq - 1)
        self.followers.add(f)
        return f

    async def get(self, seq: int) -> Entry | None:
        return self.entries[seq - 1] if 0 < seq <= len(self.entries) else None
