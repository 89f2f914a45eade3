"""OpenTelemetry set-up. The exporter is chosen by the standard `OTEL_TRACES_EXPORTER` variable
(`otlp` over HTTP, `console`, or `none`, the default).

Without an exporter no span is recorded (sampler `always_off`): nothing would receive it, and a
recorded span per status report or decision was a third of a busy agent's CPU. Trace context is
still made and carried on every event, so log lines and audit entries keep their trace ids.

Those carried contexts are marked unsampled, so a process with an exporter records every span
(`always_on`) rather than the SDK's default of following its parent's decision: otherwise a span
continuing an entry written by a process without an exporter (an agent, or the cluster before
tracing was switched on) would be dropped. `OTEL_TRACES_SAMPLER` still chooses, when set.

Whether spans are recorded is decided here once (`recording`): where they are not, the agent makes
its reports' `traceparent` as a string (`traces.child_traceparent`) instead of starting, injecting
and ending a span it would throw away."""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler

_recording = True


def recording() -> bool:
    """Whether this process records spans: False once `setup` chose `always_off` (no exporter).

    True until `setup` runs (unit tests, a program using Shoal's parts): whoever set the tracer
    provider then may record, and a writer taking the string path under it would lose its spans
    without a word. Wrongly True costs only the span a writer starts; wrongly False, the spans."""
    return _recording


def setup(process: str) -> None:
    global _recording
    exporter = _exporter(os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower())
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", f"shoal-{process}")}),
        sampler=_sampler(exporter),
    )
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _recording = provider.sampler is not ALWAYS_OFF


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
