"""An OTLP/HTTP trace collector on loopback, for tests: the real exporters of the real processes
send their spans here (chosen by the standard `OTEL_*` variables), and a test reads them back."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from services.kernel.metrics import serve


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int


@dataclass
class Collector:
    endpoint: str
    spans: list[Span]

    def env(self) -> dict[str, str]:
        """What a process needs to export its spans here, quickly (a short batch delay)."""
        return {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": self.endpoint,
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf", "OTEL_BSP_SCHEDULE_DELAY": "100"}


def _spans(body: bytes) -> list[Span]:
    request = ExportTraceServiceRequest.FromString(body)
    out = []
    for rs in request.resource_spans:
        service = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), "")
        for ss in rs.scope_spans:
            out += [Span(service, s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                         s.start_time_unix_nano) for s in ss.spans]
    return out


@contextlib.asynccontextmanager
async def otlp_collector() -> AsyncIterator[Collector]:
    spans: list[Span] = []

    async def receive(request: web.Request) -> web.Response:
        spans.extend(_spans(await request.read()))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", receive)
    runner, addr = await serve(app, "127.0.0.1:0")
    try:
        yield Collector(f"http://{addr}/v1/traces", spans)
    finally:
        await runner.cleanup()
