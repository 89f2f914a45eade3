"""Request metrics and one trace span per request.

Labels are the route template (never the raw path, which holds ids) and the status, so the
number of series is bounded by the number of routes. The span is current while the handler runs,
so the writer's `propagate.inject` puts its `traceparent` on every event the request appends and
the trace continues through the processes that react to them.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import propagate, trace
from prometheus_client import Counter, Histogram

from services.api.versioning import unversioned

REQUESTS = Counter("shoal_api_requests_total", "API requests", ["method", "route", "status"])
LATENCY = Histogram(
    "shoal_api_request_duration_seconds", "API request latency", ["method", "route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

_tracer = trace.get_tracer("shoal.api")


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return unversioned(resource.canonical) if resource is not None else UNMATCHED


@web.middleware
async def telemetry_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = route_label(request)
    method = request.method if request.method in _METHODS else "OTHER"
    started = time.perf_counter()
    with _tracer.start_as_current_span(
        f"{method} {route}",
        context=propagate.extract(request.headers),
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": method, "http.route": route},
    ) as span:
        response = await handler(request)
        span.set_attribute("http.response.status_code", response.status)
    status = str(response.status)
    REQUESTS.labels(method, route, status).inc()
    LATENCY.labels(method, route, status).observe(time.perf_counter() - started)
    return response
