"""The api's side of the log protocol (`schemas/logs.py`): one task's lines from the agent that runs it.

`lines()` opens a stream with a request (no responder or no answer: the node is not available), reads
numbered chunks from a private inbox, tells the agent how far it has read (which opens the window and
renews the lease) at least every `RENEW_S`, and, if nothing arrives for that long, asks the agent
whether it still has the stream, so a dead agent ends the stream instead of hanging it. Leaving
early, for any reason, cancels the stream in the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import msgspec
import nats.errors
from nats.aio.client import Client

from schemas import logs
from schemas.logs import LogBatch, LogCancel, LogOpen, LogQuery, LogRenew
from services.kernel import subjects
from services.kernel.nats_client import keeping_cancellation

OPEN_TIMEOUT_S = 2.0
WINDOW = 32


class LogUnavailable(Exception):
    """The logs could not be read (or not all of them); the message says why, for the user."""


class LogFetcher:
    def __init__(self, nc: Client, *, renew_s: float = logs.RENEW_S, timeout_s: float = OPEN_TIMEOUT_S,
                 window: int = WINDOW) -> None:
        self.nc = nc
        self.renew_s = renew_s
        self.timeout_s = timeout_s
        self.window = window

    async def lines(self, node_id: str, task_id: str, query: LogQuery) -> AsyncGenerator[LogBatch, None]:
        """The task's lines in batches; LogUnavailable when the node, its agent or the container fails."""
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        ended = False
        try:
            await self._control(node_id, LogOpen(inbox=inbox, task_id=task_id, query=query, window=self.window))
            loop = asyncio.get_running_loop()
            received = acked = 0
            renewed = loop.time()
            while True:
                try:
                    # nats-py's `next_msg` waits with `wait_for`: a client gone as a chunk lands
                    # must still end the stream, not renew it for ever.
                    msg = await keeping_cancellation(sub.next_msg(timeout=self.renew_s))
                except nats.errors.TimeoutError:
                    try:
                        await self._control(node_id, LogRenew(inbox=inbox, received=received))
                    except LogUnavailable:
                        # The agent replies after it sent the stream's last chunk: if that is already
                        # here, the stream ended normally.
                        if not sub.pending_msgs:
                            raise
                    acked, renewed = received, loop.time()
                    continue
                chunk = _decode(msg.data, node_id)
                if chunk.seq != received + 1:
                    raise LogUnavailable(f"log lines from node {node_id} were lost on the way "
                                         f"(chunk {chunk.seq} after {received})")
                received = chunk.seq
                if chunk.end:
                    ended = True
                    if chunk.error:
                        raise LogUnavailable(chunk.error)
                    return
                yield chunk.lines
                if received - acked >= self.window // 2 or loop.time() - renewed >= self.renew_s:
                    await self.nc.publish(subjects.logs(node_id), logs.encode(LogRenew(inbox=inbox, received=received)))
                    acked, renewed = received, loop.time()
        finally:
            if not ended:
                with contextlib.suppress(nats.errors.Error):
                    await self.nc.publish(subjects.logs(node_id), logs.encode(LogCancel(inbox=inbox)))
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _control(self, node_id: str, message: LogOpen | LogRenew) -> None:
        try:
            msg = await self.nc.request(subjects.logs(node_id), logs.encode(message), timeout=self.timeout_s)
        except nats.errors.NoRespondersError:
            raise LogUnavailable(f"node {node_id} is not available: no agent answers for it") from None
        except nats.errors.TimeoutError:
            raise LogUnavailable(f"node {node_id} is not available: its agent did not answer "
                                 f"within {self.timeout_s:g}s") from None
        try:
            reply = logs.decode_reply(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise LogUnavailable(f"node {node_id}'s agent answered something else than a log reply: {e}") from e
        if reply.error:
            raise LogUnavailable(reply.error)


def _decode(data: bytes, node_id: str) -> logs.LogChunk:
    try:
        return logs.decode_chunk(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise LogUnavailable(f"node {node_id}'s agent sent something else than log lines: {e}") from e
