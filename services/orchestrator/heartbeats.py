"""How far the heartbeat listener has read: the shell that keeps `Liveness.heard_until_ns` current.

Heartbeats share the orchestrator's NATS connection with the log it follows; when the process is
behind, they wait on the socket behind thousands of entries. A round trip to the server (PING/PONG)
answers "has everything sent before now been read?": the server answers a PING after every message
it delivered before it, and nats-py parses them in order, so once the PONG is back and the
subscription's queue has been handled, every heartbeat published before the PING was observed.

A round trip counts only if the connection stayed up and was not re-established meanwhile: while
nats-py reconnects, `flush()` returns at once without a PING, and a PING sent before a reconnect
is never answered (nats-py forgets it). A reconnect loses whatever was sent meanwhile, so silence
before it is forgiven (`missed_until`) and the round trip in flight is abandoned, not awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import nats.errors
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from services.orchestrator.liveness import Liveness

log = logging.getLogger(__name__)

PROBE_S = 0.25
_ROUND_TRIP_TIMEOUT_S = 60
"""A process minutes behind is still answered in order; a timeout only starts the next probe."""


async def _round_trip(nc: Client) -> bool:
    """True once a PING sent on an established connection is answered. The check and the PING run
    without a suspension between them, so nats-py's PING-less path for a connection being
    re-established is never taken for an answer."""
    if not nc.is_connected:
        return False
    try:
        await nc.flush(timeout=_ROUND_TRIP_TIMEOUT_S)
    except (TimeoutError, nats.errors.Error) as e:
        log.debug("heartbeat listener round trip failed; no node goes down meanwhile", extra={"error": str(e)})
        return False
    return True


async def confirm_heard(nc: Client, sub: Subscription, liveness: Liveness) -> None:
    """Forever: a round trip at most every `PROBE_S`; once the heartbeats it flushed through have
    been handled (checked a probe later, without waiting on them), `heard_until` the time it was
    sent. While the connection is lost nothing is confirmed, so no node is declared down for
    silence this process cannot hear."""
    answered: tuple[int, int] | None = None
    """The last round trip: (messages the subscription had received by its answer, when it was sent)."""
    probe: asyncio.Task[bool] | None = None
    abandoned: set[asyncio.Task[bool]] = set()
    sent_ns = 0
    reconnects = nc.stats["reconnects"]
    try:
        while True:
            if answered is not None and (liveness.observed >= answered[0] or not sub.pending_msgs):
                liveness.heard_until(answered[1])  # an empty queue with fewer observed: the rest were dropped
            if nc.stats["reconnects"] != reconnects:  # heartbeats sent while it was away are lost
                reconnects = nc.stats["reconnects"]
                liveness.missed_until(time.time_ns())
                if probe is not None:  # its PING will never be answered: it ends by its own timeout
                    abandoned.add(probe)
                    probe.add_done_callback(abandoned.discard)
                answered, probe = None, None
                log.info("heartbeat listener reconnected: silence until now is not counted against any node")
            if probe is None:
                sent_ns = time.time_ns()
                probe = asyncio.get_running_loop().create_task(_round_trip(nc), name="heartbeats-round-trip")
            await asyncio.wait([probe], timeout=PROBE_S)
            if probe.done():
                same_connection = nc.is_connected and nc.stats["reconnects"] == reconnects
                answered = (sub.delivered, sent_ns) if probe.result() and same_connection else None
                probe = None
                await asyncio.sleep(PROBE_S)
    finally:
        left = abandoned | ({probe} if probe is not None else set())
        for task in left:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*left, return_exceptions=True)
