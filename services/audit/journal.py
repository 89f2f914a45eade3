"""The audit journal: one JSON line per log entry, appended and fsynced before the entry is acked.

The journal, not the consumer, is the record of what was written: on start it says the last
sequence it holds (a line cut short by a crash is dropped first), and whatever the consumer delivers
again up to that sequence is acknowledged without writing. A crash between the write and the ack
therefore never repeats a line, and a crash before the write never loses one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgspec

from schemas.events import Envelope
from services.audit.sentences import describe
from services.kernel.redact import public_event
from services.kernel.state import ClusterState
from services.kernel.traces import TRACEPARENT

_TAIL_BYTES = 1 << 20
"""Longer than any line: the last complete line is always inside the tail read."""
_encoder = msgspec.json.Encoder()


def trace_id(headers: dict[str, str] | None) -> str:
    """The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), or ""."""
    parts = (headers or {}).get(TRACEPARENT, "").split("-")
    return parts[1] if len(parts) == 4 else ""


def line(state: ClusterState, seq: int, subject: str, env: Envelope | None,
         headers: dict[str, str] | None) -> bytes:
    """The journal line for one entry, described against the state just before it."""
    out: dict[str, Any] = {"seq": seq, "subject": subject, "trace_id": trace_id(headers)}
    if env is None:
        out.update(time="", actor="", event="", id="", text="an unreadable entry (skipped by every process)")
    else:
        out.update(time=env.time, actor=env.actor, event=type(env.event).__name__, id=env.id,
                   text=describe(state, env), data=msgspec.to_builtins(public_event(env.event)))
    return _encoder.encode(out) + b"\n"


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path

    def last_seq(self) -> int:
        """The last sequence written, after dropping a partial last line. Blocking: call in a thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
            complete = tail.rfind(b"\n") + 1
            if complete < len(tail):
                f.truncate(size - (len(tail) - complete))
            lines = tail[:complete].splitlines()
        return int(json.loads(lines[-1])["seq"]) if lines else 0

    def write(self, lines: list[bytes]) -> None:
        """Append and fsync. Blocking: call in a thread."""
        with self.path.open("ab") as f:
            f.write(b"".join(lines))
            f.flush()
            os.fsync(f.fileno())
