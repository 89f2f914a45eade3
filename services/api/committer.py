"""The write path's shell: decide on the current state, append as a compare-and-set, retry on a
conflict with a fresh view, then wait until the projection has applied the entry.

Deciding is a pure function of the state (see `commands`), so a retry is simply deciding again
on a caught-up projection: a stale `?version=` then fails as "out of sequence", a name taken by a
concurrent create fails as a 409, and an unrelated race just succeeds on the second try.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from services.api.errors import Unavailable
from services.kernel.eventlog import Conflict
from services.kernel.projection import Projection
from services.kernel.state import ClusterState
from services.kernel.writer import Intent, Writer

log = logging.getLogger(__name__)

Decide = Callable[[ClusterState], Intent | None]
"""Returns the event to append, None when there is nothing to do, or raises an `ApiError`."""

MAX_TRIES = 5
SETTLE_TIMEOUT = 10.0


class Committer:
    def __init__(self, projection: Projection, writer: Writer, settle_timeout: float = SETTLE_TIMEOUT) -> None:
        self.projection = projection
        self.writer = writer
        self.settle_timeout = settle_timeout

    async def commit(self, decide: Decide) -> int:
        """The sequence of the appended entry (or of the state, if there was nothing to do),
        returned once the projection shows it, so the caller's next read sees its write."""
        for _ in range(MAX_TRIES):
            state = self.projection.state
            intent = decide(state)
            if intent is None:
                return state.seq
            [result] = await self.writer.append([intent], state)
            if isinstance(result, Conflict):
                await self._catch_up(result)
                continue
            await self._settle(result)
            return result
        raise Unavailable("the cluster kept changing under this request; retry it")

    async def _catch_up(self, conflict: Conflict) -> None:
        """Wait until the projection has seen the entry that beat us (or the log's end, if the
        server did not say which entry that was)."""
        target = conflict.last_seq if conflict.last_seq > 0 else await self.projection.log.last_seq()
        await self._settle(target)

    async def _settle(self, seq: int) -> None:
        """A slow projection delays the answer but never fails a write that is already stored."""
        try:
            async with asyncio.timeout(self.settle_timeout):
                await self.projection.wait_for(seq)
        except TimeoutError:
            log.warning("projection did not reach the appended entry in time",
                        extra={"seq": seq, "applied": self.projection.state.seq})
