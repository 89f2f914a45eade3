"""The event log seam: one small protocol, a JetStream implementation and an in-memory one.

Everything above it (projections, writers, the deciding loops) is written against `EventLog`, so
the same contract tests run against both implementations and the core is tested without sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from services.kernel.subjects import Filter

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Append:
    """One entry to append. With `expect_seq` set it is a compare-and-set: it is stored only if the
    last entry on `expect_subject` (a filter, default the subject itself) has that sequence (0 = none)."""

    subject: str
    data: bytes
    msg_id: str
    expect_seq: int | None = None
    expect_subject: str | None = None
    headers: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Conflict:
    """A compare-and-set lost: the writer's view was stale. Catch up, decide again, retry."""

    subject: str
    last_seq: int


MAX_ATOMIC = 1000
"""nats-server's limit on the entries of one atomic batch."""

AppendResult = int | Conflict
"""The stream sequence of the stored entry, or the conflict that kept it out."""


@dataclass(slots=True)
class Entry:
    """One delivered log entry. Not frozen: one is built per entry on replay, and a frozen dataclass
    costs four times as much to construct."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str] | None
    pending: int
    """How many entries matching the follower's filter come after this one (0 = caught up)."""


OnEntry = Callable[[Entry], Awaitable[None] | None]


class Following(Protocol):
    async def stop(self) -> None: ...


class LogUnavailable(Exception):
    """The log cannot take writes right now (no quorum, server gone). Retry later."""


async def all_settled(*aws: Awaitable[T]) -> list[T]:
    """Every result, or the first failure once *every* one has settled.

    A writer that sees a failure catches up with the log and decides again; if a sibling append were
    still in flight it could commit after that read, and the new decision would write the same
    change twice (a new task under a new id, which no compare-and-set catches)."""
    done = await asyncio.gather(*aws, return_exceptions=True)
    for outcome in done:
        if isinstance(outcome, BaseException):
            raise outcome
    return done  # type: ignore[return-value]  # no failures: every outcome is a T


class EventLog(Protocol):
    async def append(self, batch: Sequence[Append]) -> list[AppendResult]:
        """Append all entries pipelined; results in the same order."""
        ...

    async def append_atomic(self, batch: Sequence[Append]) -> list[AppendResult]:
        """Store all entries or none (at most `MAX_ATOMIC` of them): one failed compare-and-set
        refuses the whole batch, and then every result is that `Conflict`."""
        ...

    async def last_seq(self, filter_subject: str | None = None) -> int:
        """The last sequence in the stream, or of the entries matching a filter (0 if none)."""
        ...

    async def follow(self, filter_subject: Filter, start_seq: int, on_entry: OnEntry) -> Following:
        """Deliver every entry matching the filter (any of its subjects) from `start_seq` on, in
        order, then follow live."""
        ...

    async def get(self, seq: int) -> Entry | None:
        """One entry by sequence (None if there is none)."""
        ...
