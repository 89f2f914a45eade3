"""The nats-py client Shoal connects with: nats-py's own, with two changes.

It reads message headers for less CPU. Every entry of the log carries 4 to 7 headers
(`Nats-Msg-Id`, `traceparent`, the compare-and-set and atomic batch headers, which the server
stores as sent), and every process that follows the log parses them all for every entry it reads.
nats-py's parser checks each header name for whitespace with a generator over its characters:
8-16 % of the api's, orchestrator's and scheduler's CPU (py-spy, `benchmarks/schedule.py`). The
names are the same few on every entry, so this parser checks each distinct name once and remembers
the answer; its result is the same dict as nats-py's for any input (`tests/unit/test_nats_client.py`
compares the two).

And a cancellation is never lost in it. nats-py waits for every reply with `asyncio.wait_for`,
which on Python 3.11 returns a reply that arrives together with a cancellation and drops the
cancellation (gh-86296, fixed in 3.12). A loop around requests then carries on as if it had not
been cancelled, and whoever waits for it to stop waits for ever: a standby polling for a lease
kept a test's teardown waiting past its 2-minute limit in CI. Its requests and flushes raise such
a cancellation instead of dropping it. (Shoal's own code uses `asyncio.timeout`, which keeps it;
ruff refuses `asyncio.wait_for` outside the tests.) A publish is left as it is: it waits only when
nats-py's outgoing buffer is full (and then drops a cancellation too), and an override would add
~1.3 us to every publish, half again what one costs; a process's stop deadline
(`services/kernel/stopping.py`) covers that case.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

from nats.aio.client import Client

T = TypeVar("T")

_CRLF: Final = b"\r\n"
_NAMES_KEPT: Final = 256
"""Distinct header names remembered: Shoal writes fewer than 10; a peer inventing names per message
costs only the check nats-py makes anyway."""
_names: dict[bytes, str | None] = {}


def _name(raw: bytes) -> str | None:
    """A header name as nats-py reads it, None when nats-py would skip the header."""
    try:
        key = raw.strip().decode("ascii")
    except UnicodeDecodeError:
        return None
    return None if any(c.isspace() for c in key) else key


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """nats-py's `Client._parse_header_lines`, with each distinct name checked once."""
    out: dict[str, str] = {}
    names = _names
    for line in raw.split(_CRLF):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        if name in names:
            key = names[name]
        else:
            key = _name(name)
            if len(names) < _NAMES_KEPT:
                names[name] = key
        if key is not None:
            out[key] = value.strip().decode("utf-8", "replace")
    return out


async def keeping_cancellation(call: Awaitable[T]) -> T:
    """`call`'s result, or the cancellation asked for while it ran if the call dropped it.

    A cancellation asked for raises the task's `cancelling()` count until it is handled; one that
    reached the caller as `CancelledError` never gets here, and one already being handled when the
    call began (a `finally` closing up after a cancel) was counted before it, so this raises only
    what the call swallowed. An `asyncio.timeout` around the call still turns it into `TimeoutError`."""
    task = asyncio.current_task()
    asked = task.cancelling() if task is not None else 0
    result = await call
    if task is not None and task.cancelling() > asked:
        raise asyncio.CancelledError
    return result


class ShoalClient(Client):
    """nats-py's client with `parse_header_lines` as its header parser and no dropped cancellation."""

    _parse_header_lines = staticmethod(parse_header_lines)

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        return await keeping_cancellation(super().request(*args, **kwargs))

    async def flush(self, *args: Any, **kwargs: Any) -> None:
        await keeping_cancellation(super().flush(*args, **kwargs))
