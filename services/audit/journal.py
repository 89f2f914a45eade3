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
from typing import Any, BinaryIO

import msgspec

from schemas.events import Envelope
from services.audit.sentences import describe
from services.kernel.redact import public_event
from services.kernel.state import ClusterState
from services.kernel.traces import TRACEPARENT

_CHUNK = 1 << 16
"""How much of the journal's end is read at a time while looking back for a line break."""
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


def _last_newline(f: BinaryIO, end: int) -> int:
    """Where the last line break before `end` is, or -1: read backwards a chunk at a time, so a
    line of any length is found whole without reading the whole journal."""
    while end > 0:
        start = max(0, end - _CHUNK)
        f.seek(start)
        found = f.read(end - start).rfind(b"\n")
        if found >= 0:
            return start + found
        end = start
    return -1


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path

    def last_seq(self) -> int:
        """The last sequence written, after dropping a partial last line. Blocking: call in a thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as f:
            size = f.seek(0, os.SEEK_END)
            end = _last_newline(f, size)
            if end + 1 < size:
                f.truncate(end + 1)
            if end < 0:
                return 0
            start = _last_newline(f, end) + 1
            f.seek(start)
            return int(json.loads(f.read(end - start))["seq"])

    def write(self, lines: list[bytes]) -> None:
        """Append and fsync. Blocking: call in a thread."""
        with self.path.open("ab") as f:
            f.write(b"".join(lines))
            f.flush()
            os.fsync(f.fileno())
