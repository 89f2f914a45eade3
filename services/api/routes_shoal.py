"""Shoal's own endpoints, under `/shoal/`: the raw audit log and the cluster as it was at any point.

Positions are a log sequence (an integer) or an RFC 3339 time. `/shoal/state?at=` folds the log
up to that point, the same fold every process runs, starting from the nearest checkpoint at or
before it (checkpoints.py); it is an auditor's tool, not a hot path.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from schemas.events import Envelope
from services.api import filters
from services.api.checkpoints import Checkpoints
from services.api.context import api_of
from services.api.errors import InvalidParameter
from services.api.history import decoded, first_seq_at, read_until
from services.api.log_filter import KEYS as LOG_KEYS
from services.api.log_filter import LogFilter
from services.api.routes import Route
from services.api.routes_events import ndjson_response, stream
from services.api.wire import bool_param, json_response
from services.kernel.eventlog import Entry, EventLog
from services.kernel.ids import parse_ns
from services.kernel.redact import public_cluster, public_envelope, public_service, public_task
from services.kernel.state import ClusterState

_encoder = msgspec.json.Encoder()


async def first_at(eventlog: EventLog, value: str, last: int, name: str) -> int:
    """`SEQ` itself, or the first entry at or after a time."""
    return int(value) if value.isascii() and value.isdigit() else await first_seq_at(eventlog, _time(value, name), last)


async def last_at(eventlog: EventLog, value: str, last: int, name: str) -> int:
    """`SEQ` itself, or the last entry at or before a time."""
    if value.isascii() and value.isdigit():
        return int(value)
    return await first_seq_at(eventlog, _time(value, name) + 1, last) - 1


def _time(value: str, name: str) -> int:
    try:
        return parse_ns(value)
    except ValueError:
        raise InvalidParameter(f"invalid {name}: {value!r} is neither a sequence nor an RFC 3339 time") from None


async def log_entries(request: web.Request) -> web.StreamResponse:
    """The log as JSON lines `{"Seq", "Subject", "Entry"}`; `follow=1` keeps the stream open."""
    api = api_of(request)
    eventlog = api.projection.log
    wanted = LogFilter(filters.parse(request.query.get("filters"), LOG_KEYS), api.state)
    last = await eventlog.last_seq()
    since, until = request.query.get("since", ""), request.query.get("until", "")
    start = await first_at(eventlog, since, last, "since") if since else 1
    stop = await last_at(eventlog, until, last, "until") if until else last
    response = await ndjson_response(request)
    try:
        if bool_param(request, "follow") and not until:
            async for entry, env in stream(request, eventlog, start, last, None):
                await _write(response, entry, env, wanted)
        else:
            async for entry in read_until(eventlog, start, min(stop, last)):
                await _write(response, entry, decoded(entry), wanted)
    except ConnectionResetError:
        pass
    return response


async def _write(response: web.StreamResponse, entry: Entry, env: Envelope | None, wanted: LogFilter) -> None:
    """Undecodable entries are listed too (an auditor wants to know), whatever the filters."""
    if env is not None and not wanted(entry.subject, env):
        return
    line: dict[str, Any] = {"Seq": entry.seq, "Subject": entry.subject}
    line.update({"Entry": public_envelope(env)} if env is not None else {"Error": "undecodable entry"})
    await response.write(_encoder.encode(line) + b"\n")


async def state_at(request: web.Request) -> web.Response:
    """The cluster as of `at` (default: now, from the gateway's own projection)."""
    api = api_of(request)
    eventlog = api.projection.log
    at = request.query.get("at", "")
    if not at:
        return json_response(state_document(api.state))
    last = await eventlog.last_seq()
    if api.checkpoints is None:
        api.checkpoints = Checkpoints(eventlog, api.projection.snapshots)
    state = await api.checkpoints.state_at(max(0, min(await last_at(eventlog, at, last, "at"), last)))
    return json_response(state_document(state))


def state_document(state: ClusterState) -> dict[str, Any]:
    """Secrets redacted (kernel/redact.py): this is what auditors and the web view read."""
    return {"Seq": state.seq, "Cluster": public_cluster(state.cluster) if state.cluster is not None else None,
            "Services": [public_service(s) for s in state.services.values()],
            "Nodes": list(state.nodes.values()), "Tasks": [public_task(t) for t in state.tasks.values()]}


ROUTES: list[Route] = [
    Route("GET", "/shoal/events", log_entries, "The audit log: entries as JSON lines (a stream, so no single "
          "document schema)", query=("since", "until", "follow", "filters")),
    Route("GET", "/shoal/state", state_at, "The cluster as of a sequence or time", query=("at",),
          returns=dict[str, Any]),
]
