"""OpenTelemetry set-up. The exporter is chosen by the standard `OTEL_TRACES_EXPORTER` variable
(`otlp` over HTTP, `console`, or `none`, the default).

Without an exporter no span is recorded (sampler `always_off`): nothing would receive it, and a
recorded span per status report or decision was a third of a busy agent's CPU. Trace context is
still made and carried on every event, so log lines and audit entries keep their trace ids.

Those carried contexts are marked unsampled, so a process with an exporter records every span
(`always_on`) rather than the SDK's default of following its parent's decision: otherwise a span
continuing an entry written by a process without an exporter (an agent, or the cluster before
tracing was switched on) would be dropped. `OTEL_TRACES_SAMPLER` still chooses, when set."""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler


def setup(process: str) -> None:
    exporter = _exporter(os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower())
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", f"shoal-{process}")}),
        sampler=_sampler(exporter),
    )
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def _sampler(exporter: SpanExporter | None) -> Sampler | None:
    """None: the SDK's choice from `OTEL_TRACES_SAMPLER`."""
    if exporter is None:
        return ALWAYS_OFF
    return None if "OTEL_TRACES_SAMPLER" in os.environ else ALWAYS_ON


def _exporter(name: str) -> SpanExporter | None:
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return None
