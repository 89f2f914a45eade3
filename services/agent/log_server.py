"""Serving task logs on request: the agent's side of the protocol in `schemas/logs.py`.

One subscription per hosted node on `shoal.logs.<node id>`; each `LogOpen` becomes a stream task
that reads the executor's `logs()` and publishes numbered chunks to the api's inbox, never more than
the window ahead of what the api says it has consumed. Every stream runs under a lease that each
`LogRenew` extends: an api that crashed or lost its client without cancelling stops renewing, and
the stream ends by itself, closing the executor's reader (file polling, the engine's HTTP stream).
Nothing here touches the event log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from schemas import logs
from schemas.logs import LogCancel, LogChunk, LogOpen, LogRenew, LogReply
from services.agent.executor import Executor, ExecutorError, NoSuchContainer
from services.agent.metrics import LOG_STREAMS
from services.kernel import subjects

log = logging.getLogger(__name__)

INBOX_PREFIX = "_INBOX."
"""Chunks go only to a NATS reply inbox, never to a subject someone else listens on (`shoal.evt.…`)."""


@dataclass(eq=False)
class _Stream:
    request: LogOpen
    received: int = 0
    credit: asyncio.Event = field(default_factory=asyncio.Event)
    lease: asyncio.Timeout | None = None
    task: asyncio.Task[None] | None = None


class LogServer:
    def __init__(self, nc: Client, node_ids: Sequence[str], executor: Executor, *,
                 lease_s: float = logs.LEASE_S) -> None:
        self.nc = nc
        self.node_ids = list(node_ids)
        self.executor = executor
        self.lease_s = lease_s
        self.streams: dict[str, _Stream] = {}
        """Open streams by inbox."""
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        for node_id in self.node_ids:
            self._subs.append(await self.nc.subscribe(subjects.logs(node_id), cb=self._on_control))

    async def close(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        self._subs.clear()
        tasks = [s.task for s in self.streams.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _on_control(self, msg: Msg) -> None:
        try:
            control = logs.decode_control(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            error = f"not a log request: {e}"
        else:
            error = self._handle(control)
        if msg.reply:
            with contextlib.suppress(nats.errors.Error):
                await msg.respond(logs.encode(LogReply(error=error)))

    def _handle(self, control: logs.LogControl) -> str:
        """Apply one control message; the error to reply, if any."""
        if isinstance(control, LogOpen):
            return self._open(control)
        stream = self.streams.get(control.inbox)
        if stream is None:
            return f"no log stream {control.inbox} on this agent (it ended, or the agent restarted)"
        if isinstance(control, LogCancel):
            if stream.task is not None:
                stream.task.cancel()
        elif isinstance(control, LogRenew):
            stream.received = max(stream.received, control.received)
            stream.credit.set()
            if stream.lease is not None and not stream.lease.expired():
                stream.lease.reschedule(asyncio.get_running_loop().time() + self.lease_s)
        return ""

    def _open(self, request: LogOpen) -> str:
        if not request.inbox.startswith(INBOX_PREFIX):
            return f"the inbox must be a NATS reply inbox ({INBOX_PREFIX}…), not {request.inbox!r}"
        if request.inbox in self.streams:
            return f"log stream {request.inbox} is already open"
        if request.window < 1:
            return "the window must be at least 1 chunk"
        stream = _Stream(request)
        self.streams[request.inbox] = stream
        LOG_STREAMS.inc()
        stream.task = asyncio.get_running_loop().create_task(self._serve(stream))
        # `_serve` ends the stream before its last chunk; a task cancelled before its first step never
        # runs its body, so the done-callback ends it then.
        stream.task.add_done_callback(lambda _: self._closed(stream))
        return ""

    def _closed(self, stream: _Stream) -> None:
        if self.streams.get(stream.request.inbox) is stream:
            del self.streams[stream.request.inbox]
            LOG_STREAMS.dec()

    async def _serve(self, stream: _Stream) -> None:
        request = stream.request
        seq, error = 0, ""
        try:
            async with asyncio.timeout(self.lease_s) as stream.lease, \
                    contextlib.aclosing(self.executor.logs(request.task_id, request.query)) as batches:
                async for batch in batches:
                    seq += 1
                    await _credit(stream, seq)
                    await self.nc.publish(request.inbox, logs.encode(LogChunk(seq=seq, lines=batch)))
        except NoSuchContainer:
            pass  # a task that never got a container, or lost it, has no logs: an empty stream
        except ExecutorError as e:
            error = str(e)
        except TimeoutError:
            if stream.lease is None or not stream.lease.expired():
                raise
            log.info("log stream abandoned: its reader stopped renewing",
                     extra={"task_id": request.task_id, "inbox": request.inbox})
            return
        except asyncio.CancelledError:
            return  # cancelled by the reader (LogCancel) or the agent stopping: nobody to tell
        except Exception as e:  # an engine or file failure must end this stream, never the agent
            log.exception("reading task logs failed", extra={"task_id": request.task_id})
            error = f"task: reading the container's logs failed: {e}"
        finally:
            self._closed(stream)
        with contextlib.suppress(nats.errors.Error):
            await self.nc.publish(request.inbox, logs.encode(LogChunk(seq=seq + 1, end=True, error=error)))


async def _credit(stream: _Stream, seq: int) -> None:
    """Wait until chunk `seq` is inside the window the reader has opened."""
    while seq > stream.received + stream.request.window:
        stream.credit.clear()
        await stream.credit.wait()
