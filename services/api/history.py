"""Reading the log itself, for `/events` and the `/shoal/` audit endpoints.

The log is the audit trail, so history is served from it rather than from any copy: a time is
turned into a sequence by binary search over entry times (entries are appended in time order, up to
clock skew between writers), then entries are streamed with an ordinary follower.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec

from schemas.codec import decode
from schemas.events import Envelope
from services.api.errors import InvalidParameter
from services.kernel.eventlog import Entry, EventLog
from services.kernel.ids import parse_ns
from services.kernel.subjects import ALL


def parse_time(value: str, name: str) -> int:
    """Docker's `since`/`until`: Unix seconds with optional fraction (what the CLI sends) or RFC 3339;
    returns nanoseconds."""
    seconds, dot, fraction = value.partition(".")
    if value.isascii() and seconds.isdigit() and (not dot or fraction.isdigit()):
        return int(seconds) * 1_000_000_000 + int(fraction.ljust(9, "0")[:9] or 0)
    try:
        return parse_ns(value)
    except ValueError:
        raise InvalidParameter(f"invalid value for {name}: {value!r} is neither Unix seconds nor RFC 3339") from None


def entry_time(entry: Entry) -> int | None:
    """The entry's time in ns, or None for an entry that does not decode (it has no time to offer)."""
    envelope = decoded(entry)
    try:
        return parse_ns(envelope.time) if envelope is not None else None
    except ValueError:
        return None


async def first_seq_at(eventlog: EventLog, at_ns: int, last: int) -> int:
    """The first sequence whose entry is at or after `at_ns` (last + 1 if none is)."""
    lo, hi = 1, last + 1
    while lo < hi:
        mid = (lo + hi) // 2
        entry = await eventlog.get(mid)
        stamp = entry_time(entry) if entry is not None else None
        if stamp is None or stamp < at_ns:
            lo = mid + 1
        else:
            hi = mid
    return lo


@asynccontextmanager
async def following(eventlog: EventLog, start: int, filter_subject: str = ALL) -> AsyncIterator[
        asyncio.Queue[Entry]]:
    """Entries from `start` on, then live ones, in a queue; the follower stops when the block ends."""
    queue: asyncio.Queue[Entry] = asyncio.Queue()
    follower = await eventlog.follow(filter_subject, start, queue.put_nowait)
    try:
        yield queue
    finally:
        await follower.stop()


async def read_until(eventlog: EventLog, start: int, stop: int) -> AsyncIterator[Entry]:
    """Entries with `start <= seq <= stop`, in order."""
    if start > stop:
        return
    async with following(eventlog, start) as queue:
        while True:
            entry = await queue.get()
            if entry.seq > stop:
                return
            yield entry
            if entry.seq == stop:
                return


def decoded(entry: Entry) -> Envelope | None:
    """The entry's envelope, or None for a corrupt or unknown entry (skipped, as the fold skips it)."""
    try:
        return decode(entry.data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
