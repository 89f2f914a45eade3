"""Docker's stdcopy framing: how the Engine multiplexes stdout and stderr on one non-TTY stream.

Each frame is an 8-byte header `[stream, 0, 0, 0, uint32 big-endian length]` then the payload;
stream 1 is stdout, 2 stderr, 3 an error from the daemon (the CLI stops and prints it).
"""

from __future__ import annotations

import struct

STDOUT, STDERR, SYSTEMERR = 1, 2, 3
_HEADER = struct.Struct(">BxxxL")


def frame(stream: int, payload: bytes) -> bytes:
    return _HEADER.pack(stream, len(payload)) + payload


def split(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The complete frames at the start of `data` as (stream, payload), and the incomplete rest."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while len(data) - pos >= _HEADER.size:
        stream, length = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if end > len(data):
            break
        out.append((stream, data[pos + _HEADER.size:end]))
        pos = end
    return out, data[pos:]
