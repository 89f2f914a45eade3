"""The `EventLog` contract, run against the in-memory log and a real JetStream stream alike: if the
in-memory log passes, tests above the seam that use it are telling the truth about JetStream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from services.kernel import subjects
from services.kernel.eventlog import Append, Conflict, Entry, EventLog
from services.kernel.jetstream import JetStreamLog


def _a(subject: str, msg_id: str, expect: int | None = None, scope: str | None = None) -> Append:
    return Append(subject=subject, data=msg_id.encode(), msg_id=msg_id, expect_seq=expect, expect_subject=scope)


async def test_appends_are_numbered_in_order(eventlog: EventLog) -> None:
    results = await eventlog.append([_a(subjects.CLUSTER, f"m{i}") for i in range(5)])
    assert results == [1, 2, 3, 4, 5]
    assert await eventlog.last_seq() == 5


async def test_same_message_id_is_stored_once(eventlog: EventLog) -> None:
    first = await eventlog.append([_a(subjects.CLUSTER, "same")])
    again = await eventlog.append([_a(subjects.CLUSTER, "same")])
    assert first == again == [1]
    assert await eventlog.last_seq() == 1


async def test_compare_and_set_on_an_entity(eventlog: EventLog) -> None:
    svc = subjects.service("s1", "spec")
    assert await eventlog.append([_a(svc, "c1", expect=0)]) == [1]
    lost = await eventlog.append([_a(svc, "c2", expect=0)])
    assert lost == [Conflict(svc, 1)]
    assert await eventlog.append([_a(svc, "c3", expect=1)]) == [2]


async def test_compare_and_set_on_a_task_before_and_after_its_move_to_a_node(eventlog: EventLog) -> None:
    """The assignment is compared against the waiting task's subjects and lands under the node, where
    the task's later writers compare against it (the stale write the waiting scope cannot refuse is
    the fold's to ignore: test_fold.py)."""
    waiting, on_n1 = subjects.task_all("", "t1"), subjects.task_all("n1", "t1")
    assert await eventlog.append([_a(subjects.task("", "t1", "desired"), "c", expect=0, scope=waiting)]) == [1]
    raced = await eventlog.append([_a(subjects.task("", "t1", "placement"), "p", expect=0, scope=waiting)])
    assert raced == [Conflict(subjects.task("", "t1", "placement"), 1)]
    assert await eventlog.append([_a(subjects.task("n1", "t1", "placement"), "a", expect=1, scope=waiting)]) == [2]
    assert await eventlog.append([_a(subjects.task("n1", "t1", "status"), "r")]) == [3]  # the agent's report
    stale = await eventlog.append([_a(subjects.task("n1", "t1", "desired"), "d", expect=2, scope=on_n1)])
    assert stale == [Conflict(subjects.task("n1", "t1", "desired"), 3)]
    assert await eventlog.append([_a(subjects.task("n1", "t1", "desired"), "d2", expect=3, scope=on_n1)]) == [4]


async def test_compare_and_set_over_all_service_specs_guards_name_uniqueness(eventlog: EventLog) -> None:
    await eventlog.append([_a(subjects.service("s1", "spec"), "x", expect=0, scope=subjects.SERVICE_SPECS)])
    raced = await eventlog.append([_a(subjects.service("s2", "spec"), "y", expect=0, scope=subjects.SERVICE_SPECS)])
    assert isinstance(raced[0], Conflict)


async def test_last_sequence_of_a_filter(eventlog: EventLog) -> None:
    await eventlog.append([_a(subjects.task("n1", "t1", "status"), "1"), _a(subjects.CLUSTER, "2"),
                           _a(subjects.task("n2", "t2", "status"), "3")])
    assert await eventlog.last_seq(subjects.node_tasks("n1")) == 1
    assert await eventlog.last_seq(subjects.node_tasks("n9")) == 0


def _collect(n: int) -> tuple[list[Entry], asyncio.Event, Callable[[Entry], None]]:
    """Entries as delivered, and an event set once `n` have arrived."""
    got: list[Entry] = []
    done = asyncio.Event()

    def on_entry(e: Entry) -> None:
        got.append(e)
        if len(got) == n:
            done.set()

    return got, done, on_entry


async def test_follow_replays_then_delivers_live_in_order(eventlog: EventLog) -> None:
    await eventlog.append([_a(subjects.task("n1", f"t{i}", "status"), f"old{i}") for i in range(3)])
    await eventlog.append([_a(subjects.task("n2", "x", "status"), "other")])
    got, done, on_entry = _collect(3)
    following = await eventlog.follow(subjects.node_tasks("n1"), 2, on_entry)
    await eventlog.append([_a(subjects.task("n1", "t9", "status"), "new")])
    await asyncio.wait_for(done.wait(), 5)
    await following.stop()
    assert [e.seq for e in got[:2]] == [2, 3] and got[-1].data == b"new"
    assert got[-1].pending == 0


async def test_follow_several_subjects_delivers_only_theirs_in_order(eventlog: EventLog) -> None:
    """A sim agent hosting nodes n1 and n3 reads their tasks, not n2's."""
    await eventlog.append([_a(subjects.task(n, f"t{n}", "status"), f"old-{n}") for n in ("n1", "n2", "n3")])
    got, done, on_entry = _collect(3)
    following = await eventlog.follow((subjects.node_tasks("n1"), subjects.node_tasks("n3")), 1, on_entry)
    await eventlog.append([_a(subjects.task("n2", "t", "status"), "new-n2"), _a(subjects.task("n3", "t", "status"),
                                                                                 "new-n3")])
    await asyncio.wait_for(done.wait(), 5)
    await asyncio.sleep(0.1)  # nothing else arrives
    await following.stop()
    assert [(e.seq, e.data) for e in got] == [(1, b"old-n1"), (3, b"old-n3"), (5, b"new-n3")]
    assert got[-1].pending == 0


async def test_get_returns_the_entry_with_its_message_id(eventlog: EventLog) -> None:
    await eventlog.append([_a(subjects.CLUSTER, "one")])
    entry = await eventlog.get(1)
    assert entry is not None and entry.data == b"one" and entry.subject == subjects.CLUSTER
    assert await eventlog.get(99) is None


async def test_the_jetstream_log_refuses_deletes(jslog: JetStreamLog) -> None:
    await jslog.append([_a(subjects.CLUSTER, "keep")])
    with pytest.raises(Exception, match=r"(?i)delete"):
        await jslog.js.delete_msg("SHOAL", 1)


@pytest.mark.parametrize("atomic", [False, True])
async def test_the_jetstream_log_stores_headers_as_sent_and_cleans_unsafe_ones(jslog: JetStreamLog,
                                                                               atomic: bool) -> None:
    """Header values go to nats-py marked as needing no cleaning when they need none (its cleaning cost
    a quarter of a writer's CPU); a value with a line break or blanks around it is cleaned as before."""
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
               "X-Unsafe": " a\r\nb ", "X-Blank": "  "}
    batch = [Append(subject=subjects.CLUSTER, data=b"x", msg_id=f"h{i}", headers=headers) for i in range(2)]
    await (jslog.append_atomic(batch) if atomic else jslog.append(batch))
    for seq in (1, 2):
        entry = await jslog.get(seq)
        assert entry is not None and entry.headers is not None
        assert entry.headers["traceparent"] == headers["traceparent"]
        assert entry.headers["Nats-Msg-Id"] == f"h{seq - 1}"
        assert entry.headers["X-Unsafe"] == "a  b"
        assert "\r" not in repr(entry.headers) and "\n" not in repr(entry.headers)
