"""How far the heartbeat listener has read: the shell that keeps `Liveness.heard_until_ns` current.

Heartbeats share the orchestrator's NATS connection with the log it follows; when the process is
behind, they wait on the socket behind thousands of entries. A round trip to the server (PING/PONG)
answers "has everything sent before now been read?": the server answers a PING after every message
it delivered before it, and nats-py parses them in order, so once the PONG is back and the
subscription's queue has been handled, every heartbeat published before the PING was observed.
A reconnect loses whatever was sent meanwhile, so silence before it is forgiven (`missed_until`).
"""

from __future__ import annotations

import asyncio
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


async def confirm_heard(nc: Client, sub: Subscription, liveness: Liveness) -> None:
    """Forever: a round trip every `PROBE_S`; once the heartbeats it flushed through have been
    handled (checked a probe later, without waiting on them), `heard_until` the time it was sent.
    While the connection is lost nothing is confirmed, so no node is declared down for silence this
    process cannot hear."""
    answered: tuple[int, int] | None = None
    """The last round trip: (messages the subscription had received by its answer, when it was sent)."""
    reconnects = nc.stats["reconnects"]
    while True:
        if answered is not None and (liveness.observed >= answered[0] or not sub.pending_msgs):
            liveness.heard_until(answered[1])  # an empty queue with fewer observed: the rest were dropped
        sent_ns = time.time_ns()
        try:
            await nc.flush(timeout=_ROUND_TRIP_TIMEOUT_S)
        except (TimeoutError, nats.errors.Error) as e:
            log.debug("heartbeat listener round trip failed; no node goes down meanwhile", extra={"error": str(e)})
            answered = None
        else:
            answered = (sub.delivered, sent_ns)
            if nc.stats["reconnects"] != reconnects:  # heartbeats sent while it was away are lost
                reconnects = nc.stats["reconnects"]
                liveness.missed_until(sent_ns)
                log.info("heartbeat listener reconnected: silence until now is not counted against any node")
        await asyncio.sleep(PROBE_S)
