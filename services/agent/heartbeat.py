"""Heartbeats: one core NATS message per period for every node this process hosts.

At-most-once is the point: a lost heartbeat costs nothing, the orchestrator only acts on a run of
them missing, and keeping them out of the log keeps the log about facts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import msgspec
import nats.errors

from schemas.heartbeat import Heartbeat
from services.kernel import subjects

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]
"""`nats.aio.client.Client.publish`, or a fake in tests."""


async def beat(publish: Publish, node_ids: Sequence[str], period_s: float) -> None:
    """Publish forever on `shoal.hb.<first node id>`; a failed publish is logged and the next one tried."""
    subject = subjects.heartbeat(node_ids[0])
    payload = msgspec.json.encode(Heartbeat(nodes=list(node_ids), period=period_s))
    while True:
        try:
            await publish(subject, payload)
        except nats.errors.Error as e:
            log.warning("heartbeat not sent", extra={"error": str(e)})
        await asyncio.sleep(period_s)
