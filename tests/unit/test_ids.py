"""Ids and timestamps: the shapes Docker clients expect, whatever shortcuts make them cheap."""

from __future__ import annotations

import datetime
import re

from hypothesis import given
from hypothesis import strategies as st

from services.kernel.ids import format_ns, new_id, parse_ns


def test_ids_are_25_base36_characters_and_do_not_repeat() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-z]{25}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert {i[0] for i in ids} == set("0123456789abcdefghijklmnopqrstuvwxyz")  # the low digit is uniform


def _reference(ns: int) -> str:
    stamp = datetime.datetime.fromtimestamp(ns // 1_000_000_000, datetime.UTC)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{ns % 1_000_000_000:09d}Z"


@given(st.lists(st.integers(min_value=0, max_value=4_102_444_800_000_000_000), min_size=1, max_size=20))
def test_timestamps_are_right_in_any_order_of_calls(stamps: list[int]) -> None:
    """The formatted second is remembered between calls; time going back or jumping must not reuse it."""
    for ns in [*stamps, *(s + 1 for s in stamps), *reversed(stamps)]:
        assert format_ns(ns) == _reference(ns)
        assert parse_ns(format_ns(ns)) == ns
