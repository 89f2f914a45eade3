"""`GET /services/{id}/logs` and `/tasks/{id}/logs`: the tasks' lines, merged, in Docker's framing.

Each task with a container is read from its node's agent (`log_fetcher.py`), all at once; lines are
written as they arrive, one stdcopy frame per line, as dockerd does for a non-TTY service:

    [<RFC 3339 nano> ][com.docker.swarm.node.id=N,com.docker.swarm.service.id=S,com.docker.swarm.task.id=T ]line

The docker CLI always asks for the details (unless `--raw`) and builds its `web.1.x@node |`
prefix from them. Nodes that are down or whose agent does not answer are not waited for: once every
other stream has ended, one final error frame names them, in swarmkit's words; the CLI prints it
and exits 1. An idle stream wakes up every `POLL_S` to notice a client that left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote_plus

from aiohttp import web

from schemas.logs import STDERR, STDOUT, LogBatch, LogQuery
from schemas.task import RANK, Task, TaskState
from services.api.context import api_of
from services.api.errors import InvalidParameter, Unimplemented
from services.api.history import parse_time
from services.api.log_fetcher import LogFetcher, LogUnavailable
from services.api.wire import bool_param
from services.kernel import stdcopy
from services.kernel.ids import format_ns
from services.kernel.state import ClusterState

log = logging.getLogger(__name__)

POLL_S = 1.0
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
LOG_PARAMS = ("follow", "tail", "since", "until", "timestamps", "details", "stdout", "stderr")
_QUEUE = 64
"""Batches buffered between the agents and a slow client; beyond it the agents wait (their window)."""


@dataclass(frozen=True, slots=True)
class Format:
    timestamps: bool
    details: bool


def query_of(request: web.Request) -> LogQuery:
    """Docker's logs parameters; a `tail` that is not a number means all, as dockerd reads it."""
    stdout, stderr = bool_param(request, "stdout"), bool_param(request, "stderr")
    if not (stdout or stderr):
        raise InvalidParameter("Bad parameters: you must choose at least one stream")
    tail = request.query.get("tail", "all")
    since, until = request.query.get("since", ""), request.query.get("until", "")
    return LogQuery(
        follow=bool_param(request, "follow"),
        tail=int(tail) if tail.isascii() and tail.isdigit() else -1,
        since=parse_time(since, "since") if since else 0,
        until=parse_time(until, "until") if until else 0,
        stdout=stdout,
        stderr=stderr,
    )


def details(task: Task) -> bytes:
    """swarmkit's log attributes, as dockerd encodes them: sorted `key=value`, query-escaped."""
    attrs = {"com.docker.swarm.node.id": task.node_id, "com.docker.swarm.service.id": task.service_id,
             "com.docker.swarm.task.id": task.id}
    return ",".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in sorted(attrs.items())).encode()


def frames(task: Task, batch: LogBatch, fmt: Format) -> bytes:
    prefix = details(task) + b" " if fmt.details else b""
    out = []
    for line in batch:
        stamp = format_ns(line.time).encode() + b" " if fmt.timestamps else b""
        data = line.data if line.data.endswith(b"\n") else line.data + b"\n"
        out.append(stdcopy.frame(STDERR if line.stream == STDERR else STDOUT, stamp + prefix + data))
    return b"".join(out)


def incomplete(reasons: Iterable[str]) -> bytes:
    """The final error frame: what swarmkit says when some logs could not be retrieved."""
    message = ("Error grabbing logs: warning: incomplete log stream. some logs could not be retrieved "
               f"for the following reasons: {', '.join(reasons)}\n")
    return stdcopy.frame(stdcopy.SYSTEMERR, message.encode())


def with_logs(tasks: Iterable[Task]) -> list[Task]:
    """Tasks an agent has taken on (so they may have a container), oldest first."""
    return sorted((t for t in tasks if t.node_id and t.status.state is not TaskState.REJECTED
                   and RANK[t.status.state] >= RANK[TaskState.ACCEPTED]), key=lambda t: (t.created_at, t.slot))


def unavailable(state: ClusterState, node_id: str) -> str | None:
    node = state.nodes.get(node_id)
    return f"node {node_id} is not available" if node is None or node.status.state == "down" else None


async def stream_logs(request: web.Request, tasks: list[Task]) -> web.StreamResponse:
    api = api_of(request)
    if api.logs is None:
        raise Unimplemented("logs are not available: this gateway has no NATS connection to reach the agents")
    query = query_of(request)
    fmt = Format(timestamps=bool_param(request, "timestamps"), details=bool_param(request, "details"))
    reasons: dict[str, None] = {}
    readable = []
    for task in with_logs(tasks):
        reason = unavailable(api.state, task.node_id)
        if reason is None:
            readable.append(task)
        else:
            reasons[reason] = None
    # dockerd 20.10 sends none (aiohttp would say octet-stream); later engines name the framing.
    response = web.StreamResponse(headers={"Content-Type": MULTIPLEXED})
    response.enable_chunked_encoding()
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):  # the client left; nothing to tell it
        await _relay(request, response, api.logs, readable, query, fmt, reasons)
        if reasons:
            await response.write(incomplete(reasons))
    return response


async def _relay(request: web.Request, response: web.StreamResponse, fetcher: LogFetcher, tasks: list[Task],
                 query: LogQuery, fmt: Format, reasons: dict[str, None]) -> None:
    queue: asyncio.Queue[tuple[Task, LogBatch | str | None]] = asyncio.Queue(_QUEUE)
    pumps = [asyncio.create_task(_pump(fetcher, task, query, queue)) for task in tasks]
    open_ = len(pumps)
    try:
        while open_:
            try:
                async with asyncio.timeout(POLL_S):
                    task, item = await queue.get()
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    return
                continue
            if isinstance(item, list):
                await response.write(frames(task, item, fmt))
                continue
            open_ -= 1
            if item is not None:
                reasons[item] = None
    finally:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def _pump(fetcher: LogFetcher, task: Task, query: LogQuery,
                queue: asyncio.Queue[tuple[Task, LogBatch | str | None]]) -> None:
    """One task's batches into the shared queue, then None, or the reason it ended early."""
    try:
        # Closed explicitly: cancelled while waiting on a full queue, the stream must still be cancelled
        # in the agent now, not whenever the generator is collected.
        async with contextlib.aclosing(fetcher.lines(task.node_id, task.id, query)) as batches:
            async for batch in batches:
                await queue.put((task, batch))
    except LogUnavailable as e:
        await queue.put((task, str(e)))
        return
    except Exception as e:  # e.g. NATS gone: this task's stream ends with a reason, never hangs the response
        log.exception("reading task logs failed", extra={"task_id": task.id})
        await queue.put((task, f"task {task.id}: reading its logs failed: {e}"))
        return
    await queue.put((task, None))
