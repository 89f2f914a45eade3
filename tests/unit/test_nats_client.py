"""Shoal's header parser reads every header block exactly as nats-py's own does, only cheaper."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client

from services.kernel.nats_client import ShoalClient, parse_header_lines

STORED_ENTRY = (
    b"Nats-Msg-Id: g7tyi9epi55ynqgkaqqate5g6\r\n"
    b"traceparent: 00-0123456789abcdef0123456789abcdef-0123456789abcdef-01\r\n"
    b"Nats-Expected-Last-Subject-Sequence: 0\r\n"
    b"Nats-Expected-Last-Subject-Sequence-Subject: shoal.evt.task.g7tyi9epi55ynqgkaqqate5g6.>\r\n"
    b"Nats-Batch-Id: h2\r\nNats-Batch-Sequence: 2\r\nNats-Batch-Commit: 1\r\n\r\n"
)

_names = st.sampled_from([b"Nats-Msg-Id", b"traceparent", b" Padded ", b"Two words", b"tab\tname", b"",
                          b"caf\xc3\xa9", b"\xff", b"Status", b"x:y"])
_values = st.binary(max_size=12).filter(lambda v: b"\r\n" not in v)
_lines = st.one_of(
    st.tuples(_names, st.sampled_from([b":", b": ", b":\t"]), _values).map(b"".join),
    st.binary(max_size=12).filter(lambda v: b"\r\n" not in v),
)


def test_a_stored_entrys_headers_are_read_as_nats_py_reads_them() -> None:
    headers = parse_header_lines(STORED_ENTRY)
    assert headers == Client._parse_header_lines(STORED_ENTRY)
    assert headers["Nats-Expected-Last-Subject-Sequence-Subject"] == "shoal.evt.task.g7tyi9epi55ynqgkaqqate5g6.>"
    assert len(headers) == 7


@given(st.lists(_lines, max_size=8))
def test_any_header_block_is_read_as_nats_py_reads_it(lines: list[bytes]) -> None:
    """Twice: the second read takes the names' verdicts from what the first remembered."""
    raw = b"\r\n".join(lines) + b"\r\n\r\n"
    expected = Client._parse_header_lines(raw)
    assert parse_header_lines(raw) == expected
    assert parse_header_lines(raw) == expected


def test_the_client_shoal_connects_with_parses_headers_with_it() -> None:
    """Through nats-py's own entry point for a received message's headers, so a nats-py release that
    stopped calling `_parse_header_lines` would fail here rather than silently lose the saving."""
    client = ShoalClient()
    calls: list[bytes] = []

    def spy(raw: bytes) -> dict[str, str]:
        calls.append(raw)
        return parse_header_lines(raw)

    client._parse_header_lines = spy
    headers = asyncio.run(client._process_headers(b"NATS/1.0\r\n" + STORED_ENTRY))
    assert calls and headers == parse_header_lines(STORED_ENTRY)
    assert ShoalClient._parse_header_lines is parse_header_lines
