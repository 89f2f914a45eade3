"""Shoal's client: its header parser reads every header block exactly as nats-py's own does, only
cheaper, and a cancellation that nats-py's `wait_for` drops is raised all the same."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client

from services.kernel.nats_client import ShoalClient, keeping_cancellation, parse_header_lines

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


async def _reply_with_cancel(wait: Callable[[asyncio.Future[str]], Awaitable[str]]) -> asyncio.Task[str]:
    """A task waiting for a reply that is cancelled in the same turn of the loop as the reply lands
    (the reply's own done callback cancels it), which is when Python 3.11's `wait_for` drops it."""
    reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(wait(reply))
    await asyncio.sleep(0)  # the task is waiting now
    reply.add_done_callback(lambda _: task.cancel())
    reply.set_result("reply")
    await asyncio.wait([task])
    return task


async def test_a_cancellation_that_comes_with_the_reply_is_raised() -> None:
    dropped = await _reply_with_cancel(lambda reply: asyncio.wait_for(reply, 10))
    assert not dropped.cancelled(), "asyncio.wait_for keeps this cancellation now: keeping_cancellation can go"
    assert dropped.result() == "reply"

    kept = await _reply_with_cancel(lambda reply: keeping_cancellation(asyncio.wait_for(reply, 10)))
    assert kept.cancelled()


async def test_a_call_made_while_handling_a_cancellation_returns_its_result() -> None:
    """A `finally` closing up after a cancel (releasing a lease) still gets its answers."""
    answers: list[str] = []

    async def cleaning_up() -> None:
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            answers.append(await keeping_cancellation(asyncio.sleep(0, "released")))

    task = asyncio.ensure_future(cleaning_up())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled() and answers == ["released"]


async def test_a_dropped_cancellation_inside_a_timeout_is_a_timeout() -> None:
    """What the caller's own `asyncio.timeout` asked for reaches it as `TimeoutError`, as it would
    have without the drop."""
    reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def wait() -> str:
        async with asyncio.timeout(10) as deadline:
            # the deadline passes as the reply lands: its cancellation is the one dropped
            reply.add_done_callback(lambda _: deadline.reschedule(asyncio.get_running_loop().time()))
            return await keeping_cancellation(asyncio.wait_for(reply, 10))

    task = asyncio.ensure_future(wait())
    await asyncio.sleep(0)
    reply.set_result("reply")
    await asyncio.wait([task])
    assert isinstance(task.exception(), TimeoutError)
