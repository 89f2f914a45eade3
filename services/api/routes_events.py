"""`GET /events`: the log as Docker events, from `since` to `until`, or following live.

Without `since` the stream starts now; without `until` it stays open until the client goes away.
An idle stream wakes up every `POLL_S` to notice a client that left, since aiohttp does not cancel
a handler whose client disconnected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import msgspec
from aiohttp import web

from schemas.events import Envelope
from services.api import docker_events, filters
from services.api.context import api_of
from services.api.history import decoded, first_seq_at, following, parse_time
from services.api.routes import Route
from services.kernel.eventlog import Entry, EventLog
from services.kernel.ids import parse_ns

POLL_S = 1.0
_encoder = msgspec.json.Encoder()


async def events(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    wanted = filters.parse(request.query.get("filters"), docker_events.KEYS)
    since, until = time_param(request, "since"), time_param(request, "until")
    eventlog = api.projection.log
    last = await eventlog.last_seq()
    start = await first_seq_at(eventlog, since, last) if since is not None else last + 1
    translator = docker_events.Translator(api.state, live=since is None)
    response = await ndjson_response(request)
    try:
        async for _, env in stream(request, eventlog, start, last, until):
            event = translator.translate(env) if env is not None else None
            if event is not None and event["timeNano"] >= (since or 0) and docker_events.matches(event, wanted):
                await response.write(_encoder.encode(event) + b"\n")
    except ConnectionResetError:
        pass  # the client left; nothing to tell it
    return response


def time_param(request: web.Request, name: str) -> int | None:
    value = request.query.get(name, "")
    return parse_time(value, name) if value else None


async def ndjson_response(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response


async def stream(request: web.Request, eventlog: EventLog, start: int, last: int,
                 until: int | None) -> AsyncIterator[tuple[Entry, Envelope | None]]:
    """Entries from `start` with their envelopes (None if undecodable): the history up to `last`, then
    live ones until `until` (if given) has passed and the history is done, or the client goes away."""
    seen = start - 1
    async with following(eventlog, start) as queue:
        while not _finished(request, seen, last, until):
            try:
                async with asyncio.timeout(_wait_s(until, caught_up=seen >= last)):
                    entry = await queue.get()
            except TimeoutError:
                continue
            seen = entry.seq
            env = decoded(entry)
            if env is not None and until is not None and parse_ns(env.time) > until:
                return
            yield entry, env


def _finished(request: web.Request, seen: int, last: int, until: int | None) -> bool:
    transport = request.transport
    if transport is None or transport.is_closing():
        return True
    return until is not None and seen >= last and time.time_ns() >= until


def _wait_s(until: int | None, caught_up: bool) -> float:
    """History keeps arriving, so only a caught-up stream needs to wake up for `until`."""
    if until is None or not caught_up:
        return POLL_S
    return max(0.001, min(POLL_S, (until - time.time_ns()) / 1e9))


ROUTES: list[Route] = [
    Route("GET", "/events", events, "The log as Docker events, one JSON object per line (a stream, so no "
          "single document schema)", query=("since", "until", "filters")),
]
