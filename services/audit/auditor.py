"""The auditor: every entry of the log becomes a journal line, written and fsynced in batches.

It folds what it reads into its own `ClusterState`, so each sentence is told against the cluster as
it was just before the event. On start it rebuilds that state from the log up to the journal's last
line, then follows the log from there: the journal is the only record of how far it got.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import msgspec
from prometheus_client import Counter, Gauge

from schemas.codec import decode
from schemas.events import Envelope
from services.audit.journal import Journal, line
from services.kernel.eventlog import Entry, EventLog
from services.kernel.fold import apply
from services.kernel.state import ClusterState
from services.kernel.subjects import ALL

log = logging.getLogger(__name__)

LINES = Counter("shoal_audit_lines_total", "Journal lines written")
JOURNAL_SEQ = Gauge("shoal_audit_journal_seq", "Log sequence of the last journal line")


class JournalAhead(Exception):
    """The journal holds entries the log does not: appending would silently skip the log's next ones."""


class Auditor:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.state = ClusterState()
        self.last = 0

    async def start(self, eventlog: EventLog) -> int:
        """Find the journal's last line and fold the log up to it; the sequence to resume after."""
        self.last = await asyncio.to_thread(self.journal.last_seq)
        JOURNAL_SEQ.set(self.last)
        log_last = await eventlog.last_seq()
        if self.last > log_last:
            raise JournalAhead(f"the audit journal {self.journal.path} ends at entry {self.last} but the log ends at "
                               f"{log_last}: it records another (or a reset) log; move it away or pass another --out")
        if self.last:
            await self._rebuild(eventlog, self.last)
        log.info("audit journal resumes", extra={"seq": self.last, "path": str(self.journal.path)})
        return self.last

    async def _rebuild(self, eventlog: EventLog, target: int) -> None:
        """Fold entries 1..target (the journal's end)."""
        done = asyncio.get_running_loop().create_future()

        def on_entry(entry: Entry) -> None:
            if entry.seq <= target:
                self._fold(entry.seq, entry.data, entry.subject)
            if entry.seq >= target and not done.done():
                done.set_result(None)

        following = await eventlog.follow(ALL, 1, on_entry)
        try:
            await done
        finally:
            await following.stop()

    def _fold(self, seq: int, data: bytes, subject: str) -> None:
        env = _decode(data)
        if env is not None:
            apply(self.state, seq, env, subject)

    async def handle(self, entries: Sequence[Entry]) -> bool:
        """Write the lines of a batch (skipping what the journal holds), then fsync. False, with
        nothing after the gap written, if an entry arrived out of order."""
        lines, in_order = [], True
        for entry in entries:
            seq = entry.seq
            if seq > self.last + 1:
                in_order = False
                break
            if seq <= self.last:
                continue
            env = _decode(entry.data)
            lines.append(line(self.state, seq, entry.subject, env, entry.headers))
            if env is not None:
                apply(self.state, seq, env, entry.subject)
            self.last = seq
        if lines:
            await asyncio.to_thread(self.journal.write, lines)
            LINES.inc(len(lines))
            JOURNAL_SEQ.set(self.last)
        return in_order


def _decode(data: bytes) -> Envelope | None:
    """None for an entry no process can read: it still gets a journal line, it never stops the audit."""
    try:
        return decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
