"""The audit's sentences, and its journal: exactly one line per entry across restarts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

from schemas.codec import encode
from schemas.events import ClusterCreated, JoinTokenRotated, NodeUpdated, ServiceUpdated, TaskStatusChanged
from schemas.service import ReplicatedService, ServiceMode
from schemas.task import Task, TaskState, TaskStatus
from services.audit.auditor import Auditor, JournalAhead
from services.audit.journal import Journal, line, trace_id
from services.audit.sentences import describe
from services.audit.service import audit
from services.kernel.eventlog import Append, Entry
from services.kernel.memlog import MemoryLog
from tests.events import envelope
from tests.world import World


def test_scaling_draining_and_task_states_read_as_sentences() -> None:
    w = World()
    w.node("n2")
    web = w.service("web", replicas=3)
    scale = ServiceUpdated(service_id=web, spec=msgspec.structs.replace(
        w.state.services[web].spec, mode=ServiceMode(replicated=ReplicatedService(replicas=5))))
    assert describe(w.state, envelope(scale, actor="api:alice")) == "alice scaled web from 3 to 5"
    drain = NodeUpdated(node_id="n2", spec=msgspec.structs.replace(w.state.nodes["n2"].spec, availability="drain"))
    assert describe(w.state, envelope(drain, actor="api:bob")) == "host-n2 was drained by bob"
    w.update(web, labels={"tier": "front"})
    touched = ServiceUpdated(service_id=web, spec=w.state.services[web].spec)
    assert describe(w.state, envelope(touched, actor="api:alice")) == "alice updated service web"


def test_a_task_status_names_the_task_and_its_node() -> None:
    w = World()
    w.node("n1")
    web = w.service("web", replicas=1)
    w.state.tasks["t1"] = Task(id="t1", service_id=web, service_name="web", slot=1, node_id="n1")
    event = TaskStatusChanged(task_id="t1", status=TaskStatus(state=TaskState.RUNNING))
    assert describe(w.state, envelope(event, actor="agent:n1")) == "task web.1 on host-n1 is running"


def test_a_journal_line_records_that_tokens_changed_never_the_tokens() -> None:
    w = World()
    for event in (ClusterCreated(cluster_id="c", worker_token="SWMTKN-w", manager_token="SWMTKN-m"),
                  JoinTokenRotated(role="worker", token="SWMTKN-new")):
        written = line(w.state, 1, "shoal.evt.cluster", envelope(event), None).decode()
        assert "SWMTKN" not in written and "<redacted>" in written, written


def test_trace_id_comes_from_the_traceparent() -> None:
    assert trace_id({"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}) == "a" * 32
    assert trace_id(None) == "" and trace_id({"traceparent": "junk"}) == ""


def test_the_journal_drops_a_line_cut_short_by_a_crash(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "audit.jsonl")
    journal.write([b'{"seq": 1}\n', b'{"seq": 2}\n', b'{"seq": 3, "te'])
    assert journal.last_seq() == 2
    assert journal.path.read_bytes() == b'{"seq": 1}\n{"seq": 2}\n'
    assert Journal(tmp_path / "new.jsonl").last_seq() == 0


def test_the_journal_finds_its_last_line_and_drops_a_cut_one_whatever_their_length(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "audit.jsonl")
    long = b'{"seq": 2, "text": "' + b"x" * (3 << 20) + b'"}\n'
    journal.write([b'{"seq": 1}\n', long])
    assert journal.last_seq() == 2
    journal.write([b'{"seq": 3, "text": "' + b"y" * (2 << 20)])
    assert journal.last_seq() == 2
    assert journal.path.read_bytes() == b'{"seq": 1}\n' + long
    journal.write([b'{"seq": 3'])
    assert Journal(journal.path).last_seq() == 2


def entry(seq: int, data: bytes, subject: str = "shoal.evt.service.web.spec") -> Entry:
    return Entry(seq=seq, subject=subject, data=data, headers=None, pending=0)


async def test_entries_delivered_again_after_a_restart_are_not_written_twice(tmp_path: Path) -> None:
    log = MemoryLog()
    w = World()
    web = w.service("web", replicas=1)
    events = [envelope(ServiceUpdated(service_id=web, spec=w.state.services[web].spec), actor="api:alice")
              for _ in range(5)]
    await log.append([Append(subject="shoal.evt.service.web.spec", data=encode(e), msg_id=e.id) for e in events])
    first = Auditor(Journal(tmp_path / "audit.jsonl"))
    assert await first.start(log) == 0
    assert await first.handle([entry(i, encode(e)) for i, e in enumerate(events[:3], 1)])

    again = Auditor(Journal(tmp_path / "audit.jsonl"))
    assert await again.start(log) == 3
    assert await again.handle([entry(i, encode(e)) for i, e in enumerate(events[2:], 3)])
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [x["seq"] for x in lines] == [1, 2, 3, 4, 5]
    assert [x["id"] for x in lines] == [e.id for e in events]
    assert all(x["actor"] == "api:alice" and x["event"] == "ServiceUpdated" for x in lines)


async def test_an_entry_out_of_order_stops_the_batch_unwritten(tmp_path: Path) -> None:
    auditor = Auditor(Journal(tmp_path / "audit.jsonl"))
    await auditor.start(MemoryLog())
    w = World()
    web = w.service("web", replicas=1)
    data = encode(envelope(ServiceUpdated(service_id=web, spec=w.state.services[web].spec)))
    assert not await auditor.handle([entry(1, data), entry(3, data), entry(4, data)])
    assert [x["seq"] for x in map(json.loads, (tmp_path / "audit.jsonl").read_text().splitlines())] == [1]


class _CountingJournal(Journal):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[int] = []

    def write(self, lines: list[bytes]) -> None:
        self.batches.append(len(lines))
        super().write(lines)


async def test_the_audit_follows_the_log_from_the_journals_end_in_batches(tmp_path: Path) -> None:
    """Entries already in the journal are not written again; the rest are, each once, at most `batch`
    per write, and so are entries appended while it follows."""
    log = MemoryLog()
    w = World()
    web = w.service("web", replicas=1)

    def updates(n: int) -> list[Append]:
        events = [envelope(ServiceUpdated(service_id=web, spec=w.state.services[web].spec)) for _ in range(n)]
        return [Append(subject="shoal.evt.service.web.spec", data=encode(e), msg_id=e.id) for e in events]

    await log.append(updates(3))
    first = Auditor(Journal(tmp_path / "audit.jsonl"))
    await first.start(log)
    await first.handle([entry(e.seq, e.data) for e in log.entries[:2]])
    journal = _CountingJournal(tmp_path / "audit.jsonl")
    auditor = _Watched(journal)
    assert await auditor.start(log) == 2
    await log.append(updates(6))
    following = asyncio.get_running_loop().create_task(audit(log, auditor, batch=4))
    try:
        await asyncio.wait_for(auditor.until_written(9), 5)
        await log.append(updates(2))
        await asyncio.wait_for(auditor.until_written(11), 5)
    finally:
        following.cancel()
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [x["seq"] for x in lines] == list(range(1, 12))
    assert sum(journal.batches) == 9 and max(journal.batches) <= 4


class _Watched(Auditor):
    def __init__(self, journal: Journal) -> None:
        super().__init__(journal)
        self.wrote = asyncio.Event()
        self.written = 0
        """The journal's end once a batch's write returned (`last` moves before its write does)."""

    async def handle(self, entries: Sequence[Entry]) -> bool:
        in_order = await super().handle(entries)
        self.written = self.last
        self.wrote.set()
        return in_order

    async def until_written(self, seq: int) -> None:
        while self.written < seq:
            self.wrote.clear()
            await self.wrote.wait()


async def test_a_journal_longer_than_the_log_is_refused_not_silently_continued(tmp_path: Path) -> None:
    """Resuming after seq 7 of a shorter (new or reset) log would never write its entries up to 7."""
    journal = Journal(tmp_path / "audit.jsonl")
    journal.write([b'{"seq": 7}\n'])
    with pytest.raises(JournalAhead, match="ends at entry 7 but the log ends at 0"):
        await Auditor(journal).start(MemoryLog())
