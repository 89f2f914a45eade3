"""A failed append must not be reported while a sibling append of the same pass may still commit."""

from __future__ import annotations

import asyncio

import pytest

from services.kernel.eventlog import LogUnavailable, all_settled


async def test_a_failure_is_raised_only_after_every_sibling_has_settled() -> None:
    committed: list[str] = []

    async def fails_at_once() -> int:
        raise LogUnavailable("no quorum")

    async def commits_later() -> int:
        await asyncio.sleep(0.05)
        committed.append("sibling")
        return 7

    with pytest.raises(LogUnavailable):
        await all_settled(fails_at_once(), commits_later())
    assert committed == ["sibling"], "the caller re-reads the log only once the sibling is in it"


async def test_results_keep_their_order() -> None:
    async def value(v: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return v

    assert await all_settled(value(1, 0.02), value(2, 0.0), value(3, 0.01)) == [1, 2, 3]
