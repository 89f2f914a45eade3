"""A projection following many filters (a sim agent's nodes) asks for their catch-up targets a few
at a time: each node filter is a wildcard lookup on the server, and all at once the last ones were
queued past the request timeout."""

from __future__ import annotations

import asyncio

from services.kernel import subjects
from services.kernel.eventlog import Append
from services.kernel.memlog import MemoryLog
from services.kernel.projection import LOOKUPS_IN_FLIGHT, Projection


class _CountingLog(MemoryLog):
    """The in-memory log, holding each lookup open for a turn of the loop, as a server's reply does."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.peak = 0

    async def last_seq(self, filter_subject: str | None = None) -> int:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0)
        self.in_flight -= 1
        return await super().last_seq(filter_subject)


async def test_a_many_node_projection_asks_its_catch_up_targets_a_few_at_a_time() -> None:
    log = _CountingLog()
    await log.append([Append(subjects.task("n7", "t1", "status"), b"{}", "m")])
    projection = Projection(log, filter_subject=tuple(subjects.node_tasks(f"n{i}") for i in range(50)))
    await projection.start()
    await projection.stop()
    assert projection.state.seq == 1 and log.peak == LOOKUPS_IN_FLIGHT
