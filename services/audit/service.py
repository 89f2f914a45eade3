"""The audit process: follows the whole log from the journal's end and writes it in batches.

It reads with an ordered consumer, as every other process does, not a durable one: the journal is
the record of what was written, and every start resumes right after its last line, so a consumer's
acknowledgements would record nothing the journal does not. (It was a durable pull consumer: nats-py's
fetch waits for each message with a timer of its own, 15 % of the audit's CPU in a profile.)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable
from pathlib import Path

import platformdirs

from services.audit.auditor import Auditor, JournalAhead
from services.audit.journal import Journal
from services.kernel.config import env
from services.kernel.eventlog import Entry, EventLog
from services.kernel.process import Runtime
from services.kernel.subjects import ALL

log = logging.getLogger(__name__)

NAME = "audit"
HELD_BATCHES = 4
"""Batches read ahead of the journal at most: past that, delivery waits for the writes (and JetStream's
flow control holds the rest on the server)."""


def add_args(parser: argparse.ArgumentParser) -> None:
    default = Path(platformdirs.user_data_dir("shoal")) / "audit.jsonl"
    parser.add_argument("--out", type=Path, default=Path(env("SHOAL_AUDIT_FILE", str(default))),
                        help="the JSON lines journal (env SHOAL_AUDIT_FILE)")
    parser.add_argument("--batch", type=int, default=256, help="entries written and fsynced at once, at most")


async def serve(rt: Runtime, args: argparse.Namespace) -> None:
    auditor = Auditor(Journal(args.out))
    try:
        await auditor.start(rt.log)
    except JournalAhead as e:
        log.error("audit journal refused", extra={"error": str(e)})
        raise SystemExit(str(e)) from e
    await audit(rt.log, auditor, args.batch)


async def audit(eventlog: EventLog, auditor: Auditor, batch: int) -> None:
    """Write every entry after the journal's end, for ever; should one arrive out of order, follow
    again from the journal's end."""
    while True:
        log.info("auditing", extra={"from_seq": auditor.last + 1})
        await _follow(eventlog, auditor, max(1, batch))
        log.warning("delivery out of order; following again from the journal's end", extra={"seq": auditor.last})


async def _follow(eventlog: EventLog, auditor: Auditor, batch: int) -> None:
    """Until an entry arrives out of order: a batch is written once `batch` entries are read or the
    log has no more for now, whichever comes first; what arrives meanwhile makes the next one."""
    read: list[Entry] = []
    ready, room = asyncio.Event(), asyncio.Event()
    room.set()

    async def until_room() -> None:
        await room.wait()

    def on_entry(entry: Entry) -> Awaitable[None] | None:
        read.append(entry)
        if entry.pending == 0 or len(read) >= batch:
            ready.set()
        if len(read) >= HELD_BATCHES * batch:
            room.clear()
            return until_room()
        return None

    following = await eventlog.follow(ALL, auditor.last + 1, on_entry)
    try:
        while True:
            await ready.wait()
            ready.clear()
            while read:
                entries = read[:batch]
                del read[:batch]
                room.set()
                if not await auditor.handle(entries):
                    return
    finally:
        await following.stop()
