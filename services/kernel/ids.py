"""Identifiers and timestamps in the shapes Docker clients expect."""

from __future__ import annotations

import datetime
import os
import re
import time

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_PAIRS = [_ALPHABET[r % 36] + _ALPHABET[r // 36] for r in range(36 * 36)]
"""Two base-36 digits, least significant first, per remainder modulo 36**2."""


def new_id() -> str:
    """A 25-character lowercase base-36 id from 128 random bits, like swarmkit's object ids, least
    significant digit first. Two digits per division: every event sealed draws one (a task two)."""
    n = int.from_bytes(os.urandom(16), "big")
    out = []
    for _ in range(12):
        n, r = divmod(n, 1296)
        out.append(_PAIRS[r])
    out.append(_ALPHABET[n])  # 2**128 < 4 * 36**24: one digit is left
    return "".join(out)


_second: tuple[int, str] = (-1, "")
"""The last whole second formatted, with its text: every event sealed is stamped, mostly within the
same second, and `strftime` cost twice as much as the rest of the stamp."""


def format_ns(ns: int) -> str:
    """RFC 3339 UTC with exactly nine fractional digits, so timestamps also sort as strings."""
    global _second
    secs, frac = divmod(ns, 1_000_000_000)
    last, text = _second
    if secs != last:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
        _second = (secs, text)
    return f"{text}.{frac:09d}Z"


def now() -> str:
    return format_ns(time.time_ns())


_STAMP = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?Z?")


def parse_ns(stamp: str) -> int:
    """Inverse of `format_ns` (also accepts Go's trimmed RFC3339Nano); raises ValueError.

    A regular expression and the `datetime` constructor (which checks the ranges) rather than
    `strptime`: the orchestrator parses a timestamp per task per pass, and strptime costs ~9 us."""
    m = _STAMP.fullmatch(stamp)
    if m is None:
        raise ValueError(f"not an RFC 3339 UTC time: {stamp!r}")
    y, mo, d, h, mi, sec, frac = m.groups()
    dt = datetime.datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec), tzinfo=datetime.UTC)
    return int(dt.timestamp()) * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])
