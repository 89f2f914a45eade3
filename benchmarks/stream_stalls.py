"""How long the log's stream keeps its API waiting, sampled while a benchmark runs.

A TaskCreated -> TaskAssigned tail made of whole passes that wait together is a stall somewhere
every process waits on. Core NATS round trips do not see one inside JetStream; a stream API call
does, since it waits for the same store the appends wait for. So this asks for the stream's info
every `period_s` and keeps each answer's round trip. `blocks` counts the stream's message block
files afterwards: stalls that follow each new block point at work nats-server does per block.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import nats.errors

from services.kernel.jetstream import connect

STALL_S = 0.1
"""A round trip this long is a stall: the stream answers in ~1 ms on a busy machine otherwise."""


@dataclass(slots=True)
class Stalls:
    round_trips: list[float] = field(default_factory=list)

    def report(self, blocks: int) -> dict[str, float | int]:
        stalls = [rt for rt in self.round_trips if rt >= STALL_S]
        ordered = sorted(self.round_trips)
        p99 = ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0
        return {"probes": len(ordered), "stalls": len(stalls), "stalled_s": round(sum(stalls), 2),
                "p99_ms": round(p99 * 1000, 1), "max_ms": round(max(ordered, default=0.0) * 1000, 1),
                "blocks": blocks}


def blocks(store_dir: Path, stream: str) -> int:
    """Message block files of `stream` under a nats-server store directory."""
    return sum(1 for _ in store_dir.glob(f"jetstream/*/streams/{stream}/msgs/*.blk"))


@contextlib.asynccontextmanager
async def probed(nats_url: str, stream: str, period_s: float = 0.05) -> AsyncIterator[Stalls]:
    nc = await connect([nats_url], "benchmark-stall-probe")
    stalls = Stalls()

    async def probe() -> None:
        while True:
            started = time.perf_counter()
            with contextlib.suppress(TimeoutError, nats.errors.Error):  # a timed-out probe still counts
                await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=10)
            stalls.round_trips.append(time.perf_counter() - started)
            await asyncio.sleep(period_s)

    task = asyncio.get_running_loop().create_task(probe(), name="stall-probe")
    try:
        yield stalls
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await nc.close()
