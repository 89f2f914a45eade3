"""The aiohttp application: routes under both `/path` and `/vX.Y/path`, and the middleware that
makes every answer Docker-shaped.

Middleware, outermost first: telemetry (sees the final status), errors (turns every failure into
`{"message"}` JSON with Docker's status; nothing a client sends can crash the process), versions
(refuses API versions this server cannot speak).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from services.api import routes_events, routes_nodes, routes_services, routes_shoal, routes_system, routes_tasks
from services.api.context import API, Api
from services.api.errors import ApiError, error_response
from services.api.openapi import document
from services.api.routes import Route
from services.api.routes_explain import ROUTES as EXPLAIN_ROUTES
from services.api.routes_ui import add_routes as add_ui_routes
from services.api.system import VERSION
from services.api.telemetry import telemetry_middleware
from services.api.versioning import API_VERSION, PREFIX, check
from services.api.wire import MAX_BODY
from services.kernel.eventlog import LogUnavailable
from services.kernel.metrics import metrics_handler

log = logging.getLogger(__name__)

ROUTES: list[Route] = [
    *routes_system.ROUTES, *routes_services.ROUTES, *routes_tasks.ROUTES, *routes_nodes.ROUTES,
    *routes_events.ROUTES, *routes_shoal.ROUTES,
    *EXPLAIN_ROUTES,
]


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=_OPENAPI, content_type="application/json")


ALL_ROUTES = [*ROUTES, Route("GET", "/shoal/openapi.json", openapi, "This document", returns=dict[str, Any])]
_OPENAPI = msgspec.json.encode(document(ALL_ROUTES))
DAEMON_HEADERS = {
    "Api-Version": API_VERSION,
    "Server": f"Shoal/{VERSION} (linux)",
    "Ostype": "linux",
    "Docker-Experimental": "false",
}


def make_app(api: Api) -> web.Application:
    app = web.Application(
        middlewares=[telemetry_middleware, error_middleware, version_middleware], client_max_size=MAX_BODY
    )
    app[API] = api
    for route in ALL_ROUTES:
        for path in (route.path, PREFIX + route.path):
            if route.method == "GET":
                app.router.add_get(path, route.handler)  # also answers HEAD, as /_ping must
            else:
                app.router.add_route(route.method, path, route.handler)
    app.router.add_get("/metrics", metrics_handler)
    add_ui_routes(app)
    app.on_response_prepare.append(_daemon_headers)
    return app


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(e.status, e.message)
    except web.HTTPException as e:
        return error_response(e.status, _http_message(e))
    except LogUnavailable as e:
        log.warning("event log unavailable", extra={"error": str(e)})
        return error_response(503, "the cluster's event log is unavailable (no NATS JetStream quorum, or no server "
                                   f"reachable); reads still answer, retry the write later: {e}")
    except Exception:
        log.exception("request failed", extra={"method": request.method, "path": request.path})
        return error_response(500, "internal error in the Shoal API; the gateway's log has the details")


def _http_message(e: web.HTTPException) -> str:
    """aiohttp's own refusals (no route, wrong method, body too large), in dockerd's words where
    dockerd has them."""
    if e.status == 404:
        return "page not found"
    return e.text.removeprefix(f"{e.status}: ") if e.text else e.reason


@web.middleware
async def version_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    version = request.match_info.get("version")
    if version is not None:
        check(version)
    return await handler(request)


async def _daemon_headers(request: web.Request, response: web.StreamResponse) -> None:
    """dockerd sends these on every response; the CLI reads `Api-Version` and `Ostype`."""
    response.headers.update(DAEMON_HEADERS)
