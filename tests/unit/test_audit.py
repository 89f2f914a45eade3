"""The audit's sentences, and its journal: exactly one line per entry across restarts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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
from services.kernel.eventlog import Append
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


@dataclass
class Msg:
    subject: str
    data: bytes
    headers: dict[str, str] | None = None
    acked: list[bool] = field(default_factory=list)

    async def ack(self) -> None:
        self.acked.append(True)


async def test_entries_delivered_again_after_a_restart_are_acked_but_not_written_twice(tmp_path: Path) -> None:
    log = MemoryLog()
    w = World()
    web = w.service("web", replicas=1)
    events = [envelope(ServiceUpdated(service_id=web, spec=w.state.services[web].spec), actor="api:alice")
              for _ in range(5)]
    await log.append([Append(subject="shoal.evt.service.web.spec", data=encode(e), msg_id=e.id) for e in events])
    first = Auditor(Journal(tmp_path / "audit.jsonl"))
    assert await first.start(log) == 0
    batch = [Msg("shoal.evt.service.web.spec", encode(e)) for e in events[:3]]
    await first.handle([1, 2, 3], batch)
    assert [bool(m.acked) for m in batch] == [False, False, True]  # the consumer acknowledges all

    again = Auditor(Journal(tmp_path / "audit.jsonl"))
    assert await again.start(log) == 3
    redelivered = [Msg("shoal.evt.service.web.spec", encode(e)) for e in events[2:]]
    await again.handle([3, 4, 5], redelivered)
    assert [bool(m.acked) for m in redelivered] == [False, False, True]
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [x["seq"] for x in lines] == [1, 2, 3, 4, 5]
    assert [x["id"] for x in lines] == [e.id for e in events]
    assert all(x["actor"] == "api:alice" and x["event"] == "ServiceUpdated" for x in lines)


async def test_an_entry_out_of_order_stops_the_batch_unwritten_and_unacked(tmp_path: Path) -> None:
    auditor = Auditor(Journal(tmp_path / "audit.jsonl"))
    await auditor.start(MemoryLog())
    w = World()
    web = w.service("web", replicas=1)
    batch = [Msg("s", encode(envelope(ServiceUpdated(service_id=web, spec=w.state.services[web].spec))))
             for _ in range(3)]
    assert not await auditor.handle([1, 3, 4], batch)
    assert [bool(m.acked) for m in batch] == [True, False, False]
    assert [x["seq"] for x in map(json.loads, (tmp_path / "audit.jsonl").read_text().splitlines())] == [1]


async def test_a_journal_longer_than_the_log_is_refused_not_silently_continued(tmp_path: Path) -> None:
    """Resuming after seq 7 of a shorter (new or reset) log would never write its entries up to 7."""
    journal = Journal(tmp_path / "audit.jsonl")
    journal.write([b'{"seq": 7}\n'])
    with pytest.raises(JournalAhead, match="ends at entry 7 but the log ends at 0"):
        await Auditor(journal).start(MemoryLog())
