"""The nats-py client Shoal connects with: nats-py's own, reading message headers for less CPU.

Every entry of the log carries 4 to 7 headers (`Nats-Msg-Id`, `traceparent`, the compare-and-set
and atomic batch headers, which the server stores as sent), and every process that follows the log
parses them all for every entry it reads. nats-py's parser checks each header name for whitespace
with a generator over its characters: 8-16 % of the api's, orchestrator's and scheduler's CPU
(py-spy, `benchmarks/schedule.py`). The names are the same few on every entry, so this parser
checks each distinct name once and remembers the answer; its result is the same dict as
nats-py's for any input (`tests/unit/test_nats_client.py` compares the two).
"""

from __future__ import annotations

from typing import Final

from nats.aio.client import Client

_CRLF: Final = b"\r\n"
_NAMES_KEPT: Final = 256
"""Distinct header names remembered: Shoal writes fewer than 10; a peer inventing names per message
costs only the check nats-py makes anyway."""
_names: dict[bytes, str | None] = {}


def _name(raw: bytes) -> str | None:
    """A header name as nats-py reads it, None when nats-py would skip the header."""
    try:
        key = raw.strip().decode("ascii")
    except UnicodeDecodeError:
        return None
    return None if any(c.isspace() for c in key) else key


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """nats-py's `Client._parse_header_lines`, with each distinct name checked once."""
    out: dict[str, str] = {}
    names = _names
    for line in raw.split(_CRLF):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        if name in names:
            key = names[name]
        else:
            key = _name(name)
            if len(names) < _NAMES_KEPT:
                names[name] = key
        if key is not None:
            out[key] = value.strip().decode("utf-8", "replace")
    return out


class ShoalClient(Client):
    """nats-py's client with `parse_header_lines` as its header parser."""

    _parse_header_lines = staticmethod(parse_header_lines)
