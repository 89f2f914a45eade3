"""Identifiers and timestamps in the shapes Docker clients expect."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_id() -> str:
    """A 25-character lowercase base-36 id from 128 random bits, like swarmkit's object ids."""
    n = int.from_bytes(os.urandom(16), "big")
    out = []
    for _ in range(25):
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
    return "".join(out)


def format_ns(ns: int) -> str:
    """RFC 3339 UTC with exactly nine fractional digits, so timestamps also sort as strings."""
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def now() -> str:
    return format_ns(time.time_ns())


def parse_ns(stamp: str) -> int:
    """Inverse of `format_ns` (also accepts Go's trimmed RFC3339Nano); raises ValueError."""
    import datetime

    base, _, frac = stamp.rstrip("Z").partition(".")
    dt = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
    return int(dt.timestamp()) * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])
