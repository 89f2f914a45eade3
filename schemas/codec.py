"""Encoding of log entries. JSON: auditors read the log with ordinary tools; msgspec keeps it cheap."""

from __future__ import annotations

import msgspec

from schemas.events import Envelope

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Envelope)


def encode(envelope: Envelope) -> bytes:
    return _encoder.encode(envelope)


def decode(data: bytes) -> Envelope:
    """Raises `msgspec.DecodeError` (or `ValidationError`) for corrupt or unknown entries."""
    return _decoder.decode(data)
