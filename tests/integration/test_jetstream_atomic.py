"""Atomic batches on a real nats-server whose commit reply is lost: the retry is refused as a
duplicate, and the batch is reported as the committed one it is, or, when it can no longer be found
on its subjects, as a conflict (safe: the caller reads the log again)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
from nats.aio.client import Client

from services.kernel import subjects
from services.kernel.eventlog import Append, Conflict
from services.kernel.jetstream import JetStreamLog, connect, ensure_stream
from tests.nats_server import NatsServer

pytestmark = pytest.mark.integration


class LosesTheFirstReply(JetStreamLog):
    """The first batch commits, then its reply is lost as on a dropped connection; `meanwhile` runs
    between that commit and the retry."""

    def __init__(self, nc: Client, meanwhile: Callable[[], Awaitable[None]] | None = None) -> None:
        super().__init__(nc, "SHOAL", ack_timeout=0.5)
        self.meanwhile = meanwhile
        self.lost = False

    async def _send_batch(self, batch: Sequence[Append]) -> asyncio.Future[int]:
        future = await super()._send_batch(batch)
        if self.lost:
            return future
        self.lost = True
        await future  # committed
        if self.meanwhile is not None:
            await self.meanwhile()
        return asyncio.get_running_loop().create_future()  # the reply that never arrives


@pytest.fixture
async def nc(nats: NatsServer) -> AsyncIterator[Client]:
    client = await connect([nats.url], "test")
    await ensure_stream(client, "SHOAL")
    yield client
    await client.close()


FENCE, SPEC, STATUS = subjects.leader_fence("orchestrator"), subjects.service("s1", "spec"), subjects.CLUSTER


def batch() -> list[Append]:
    return [Append(FENCE, b"f", "fence-1", expect_seq=0, expect_subject=FENCE),
            Append(SPEC, b"s", "spec-1", expect_seq=1, expect_subject=SPEC),
            Append(STATUS, b"c", "status-1")]


async def test_a_committed_batch_whose_reply_was_lost_is_reported_committed(nc: Client) -> None:
    log = LosesTheFirstReply(nc)
    assert await JetStreamLog(nc, "SHOAL").append([Append(SPEC, b"0", "spec-0")]) == [1]
    assert await log.append_atomic(batch()) == [2, 3, 4]
    assert log.lost and await log.last_seq() == 4, "stored once"
    stored = [await log.get(seq) for seq in (2, 3, 4)]
    assert [(e.headers or {}).get("Nats-Msg-Id") for e in stored if e is not None] == ["fence-1", "spec-1", "status-1"]


async def test_one_whose_first_subject_moved_on_is_found_by_its_last(nc: Client) -> None:
    async def another_leader_fences() -> None:
        await JetStreamLog(nc, "SHOAL").append([Append(FENCE, b"x", "other-fence")])

    log = LosesTheFirstReply(nc, another_leader_fences)
    assert await log.append_atomic(batch()[::2]) == [1, 2]


async def test_one_whose_subjects_both_moved_on_before_the_retry_is_a_conflict(nc: Client) -> None:
    async def others_write() -> None:
        await JetStreamLog(nc, "SHOAL").append([Append(FENCE, b"x", "other-fence"), Append(STATUS, b"x", "other")])

    log = LosesTheFirstReply(nc, others_write)
    assert await log.append_atomic(batch()[::2]) == [Conflict(FENCE, 4), Conflict(STATUS, 4)]
    assert log.lost and await log.last_seq() == 4, "stored once, then the others' two"
