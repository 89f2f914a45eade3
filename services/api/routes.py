"""A route: where it lives, what handles it, and what it takes and gives.

The description fields feed `/shoal/openapi.json`, so the published document is generated from
the same table the router is built from and cannot drift from it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    """Without the `/vX.Y` prefix; both spellings are served."""
    handler: Handler
    summary: str
    query: tuple[str, ...] = ()
    body: Any = None
    """Type of the JSON request body, if any."""
    returns: Any = None
    """Type of the response body, if any."""
    status: int = 200
    errors: tuple[int, ...] = ()
    """Statuses beyond those every route can answer (400 bad version, 500, 503)."""
    content_type: str = "application/json"
