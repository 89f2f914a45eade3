"""The built-in web view: `/shoal/ui` (plain HTML and JavaScript, no build step) and the server-sent
events it follows, `/shoal/ui/events`.

The page reads the cluster from `/shoal/state` (now, or `?at=SEQ` for the time slider) and redraws
when the log moves; the stream carries each entry's sequence, type and actor, so the page knows
what happened and how far the log goes. These routes are for browsers, so they stay out of the
Engine API's OpenAPI document.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
from aiohttp import web

from services.api.context import api_of
from services.api.routes_events import stream

ASSETS = Path(__file__).with_name("ui")
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_encoder = msgspec.json.Encoder()


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(ASSETS / "index.html", headers={"Content-Type": "text/html; charset=utf-8"})


async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    path = ASSETS / name
    if "/" in name or path.suffix not in _TYPES or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Content-Type": f"{_TYPES[path.suffix]}; charset=utf-8"})


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events, one per log entry after `since` (or `Last-Event-ID` on a reconnect)."""
    eventlog = api_of(request).projection.log
    last = await eventlog.last_seq()
    since = request.headers.get("Last-Event-ID") or request.query.get("since", "")
    start = int(since) + 1 if since.isascii() and since.isdigit() else last + 1
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    await response.write(f"event: hello\ndata: {last}\n\n".encode())
    try:
        async for entry, env in stream(request, eventlog, start, last, None):
            data = {"Seq": entry.seq, "Type": type(env.event).__name__ if env else "",
                    "Actor": env.actor if env else "", "Time": env.time if env else ""}
            await response.write(b"id: %d\ndata: %s\n\n" % (entry.seq, _encoder.encode(data)))
    except ConnectionResetError:
        pass
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/shoal/ui", page)
    app.router.add_get("/shoal/ui/events", events)
    app.router.add_get("/shoal/ui/{name}", asset)
