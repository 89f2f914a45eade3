"""Tracing without an exporter records nothing yet still carries trace context (its own process: the
global tracer provider can be set only once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

_PROBE = """
import json
from opentelemetry import propagate, trace
from services.kernel import tracing
before = tracing.recording()
tracing.setup("probe")
tracer = trace.get_tracer("probe")
parent = tracer.start_span("request")
headers = {}
propagate.inject(headers, context=trace.set_span_in_context(parent))
child = tracer.start_span("reaction", context=propagate.extract(headers))
unsampled = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"}
late = tracer.start_span("after an untraced hop", context=propagate.extract(unsampled))
print(json.dumps({"recording": [parent.is_recording(), child.is_recording()], "headers": headers,
                  "after_unsampled": late.is_recording(), "recording_flag": [before, tracing.recording()],
                  "same_trace": child.get_span_context().trace_id == parent.get_span_context().trace_id}))
"""


def probe(exporter: str) -> dict[str, object]:
    env = {**os.environ, "OTEL_TRACES_EXPORTER": exporter}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True,
                         timeout=60)
    [line] = [line for line in out.stdout.splitlines() if line.startswith('{"recording"')]
    result: dict[str, object] = json.loads(line)
    return result


def test_without_an_exporter_no_span_is_recorded_but_the_trace_is_carried() -> None:
    result = probe("none")
    assert result["recording"] == [False, False]
    assert "traceparent" in result["headers"] and result["same_trace"]  # type: ignore[operator]
    assert result["recording_flag"] == [True, False], "recording until set up; then off, for writers to skip spans"


def test_with_an_exporter_spans_are_recorded() -> None:
    result = probe("console")
    assert result["recording"] == [True, True]
    assert result["recording_flag"] == [True, True]


def test_with_an_exporter_a_span_continuing_an_unsampled_context_is_recorded() -> None:
    """What a process without an exporter (an agent, or the cluster before tracing was on) carries."""
    assert probe("console")["after_unsampled"] is True
