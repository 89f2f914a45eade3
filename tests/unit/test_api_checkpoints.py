"""`/shoal/state?at=` from checkpoints gives exactly what a full replay gives, and starts from the
nearest checkpoint at or before the asked sequence instead of sequence 1."""

from __future__ import annotations

from typing import Any

import msgspec

from schemas.codec import encode
from schemas.events import (
    AnyEvent,
    ClusterCreated,
    NodeJoined,
    NodeRemoved,
    ServiceCreated,
    ServiceUpdated,
    TaskAssigned,
    TaskCreated,
    TaskRemoved,
    TaskStatusChanged,
)
from schemas.node import NodeDescription, NodeSpec
from schemas.service import ContainerSpec, ServiceSpec, TaskSpec
from schemas.task import Task, TaskState, TaskStatus
from services.api.checkpoints import KEEP_RECENT, Checkpoints, kept, name
from services.api.routes_shoal import state_document
from services.kernel.eventlog import Append, Following, OnEntry
from services.kernel.memlog import MemoryLog
from services.kernel.snapshot import MemorySnapshots
from services.kernel.subjects import Filter
from tests.events import envelope


def history() -> list[AnyEvent]:
    spec = TaskSpec(container_spec=ContainerSpec(image="busybox"))
    tasks = [Task(id=f"t{i}", service_id="s", slot=i, spec=spec, status=TaskStatus(state=TaskState.NEW))
             for i in range(1, 4)]
    return [
        ClusterCreated(cluster_id="c", worker_token="w", manager_token="m"),
        *(NodeJoined(node_id=f"n{i}", spec=NodeSpec(), description=NodeDescription(hostname=f"h{i}"))
          for i in range(2)),
        ServiceCreated(service_id="s", spec=ServiceSpec(name="web")),
        *(TaskCreated(task=t) for t in tasks),
        *(TaskAssigned(task=t, node_id="n0") for t in tasks),
        TaskStatusChanged(task_id="t1", status=TaskStatus(state=TaskState.RUNNING)),
        ServiceUpdated(service_id="s", spec=ServiceSpec(name="web", labels={"v": "2"})),
        TaskRemoved(task_id="t2"),
        NodeRemoved(node_id="n1"),
    ]


class CountingLog(MemoryLog):
    """Records where each replay starts."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[int] = []

    async def follow(self, filter_subject: Filter, start_seq: int, on_entry: OnEntry) -> Following:
        self.starts.append(start_seq)
        return await super().follow(filter_subject, start_seq, on_entry)


async def filled() -> CountingLog:
    log = CountingLog()
    events = history()
    batch = [Append(f"shoal.evt.t{i}", encode(envelope(ev)), f"m{i}") for i, ev in enumerate(events[:6])]
    batch.append(Append("shoal.evt.junk", b"not an event", "junk"))  # skipped, but it has a sequence
    batch += [Append(f"shoal.evt.t{i}", encode(envelope(ev)), f"n{i}") for i, ev in enumerate(events[6:])]
    await log.append(batch)
    return log


def doc(state: Any) -> bytes:
    return msgspec.json.encode(state_document(state))


async def test_every_sequence_folds_the_same_with_and_without_checkpoints() -> None:
    log = await filled()
    last = len(log.entries)
    plain = Checkpoints(log, None)
    with_checkpoints = Checkpoints(log, MemorySnapshots(), every=3)
    # ask in an order that uses checkpoints written by earlier questions, and some not yet written
    for seq in [last, 2, 7, 6, 3, 0, 1, *range(last, 0, -1)]:
        assert doc(await with_checkpoints.state_at(seq)) == doc(await plain.state_at(seq)), seq


async def test_a_question_starts_from_the_nearest_checkpoint() -> None:
    log = await filled()
    store = MemorySnapshots()
    checkpoints = Checkpoints(log, store, every=4)
    await checkpoints.state_at(13)
    assert sorted(store.saved) == sorted(name(s) for s in (4, 8, 12)) and log.starts == [1]
    await checkpoints.state_at(11)
    await checkpoints.state_at(8)
    assert log.starts == [1, 9]  # 8 is a checkpoint itself: nothing to replay
    assert (await Checkpoints(log, store, every=4).state_at(7)).seq == 7 and log.starts[-1] == 5


async def test_an_unreadable_checkpoint_falls_back_to_an_earlier_one() -> None:
    log = await filled()
    store = MemorySnapshots()
    full = doc(await Checkpoints(log, store, every=4).state_at(13))
    store.saved[name(12)] = b"garbage"
    assert doc(await Checkpoints(log, store, every=4).state_at(13)) == full and log.starts[-1] == 9


class UnavailableSnapshots(MemorySnapshots):
    async def load(self, key: str) -> bytes | None:
        raise TimeoutError("object store not answering")


async def test_an_unavailable_store_costs_a_full_replay_not_an_error() -> None:
    log = await filled()
    full = doc(await Checkpoints(log, None).state_at(13))
    assert doc(await Checkpoints(log, UnavailableSnapshots(), every=4).state_at(13)) == full and log.starts[-1] == 1


def test_pruning_keeps_the_newest_and_thins_older_ones_for_good() -> None:
    previous: set[int] = set()
    for newest in range(1, 600):
        marks = {m for m in range(1, newest + 1) if kept(m, newest, 1)}
        assert set(range(max(1, newest - KEEP_RECENT + 1), newest + 1)) <= marks, "the newest are all kept"
        assert marks - {newest} <= previous, "a checkpoint once dropped is never wanted again"
        assert len(marks) <= KEEP_RECENT + KEEP_RECENT // 2 * (newest // KEEP_RECENT).bit_length()
        for seq in range(1, newest + 1):  # an old point starts from a checkpoint not far behind it
            start = max((m for m in marks if m <= seq), default=0)
            assert seq - start <= (newest - seq) // 3 + 1, (newest, seq, start)
        previous = marks
    assert len({m for m in range(1, 100_001) if kept(m, 100_000, 1)}) < 64


async def test_the_store_keeps_only_the_pruned_set_and_old_questions_still_answer_right() -> None:
    log = await filled()
    await log.append([Append("shoal.evt.junk", b"padding", f"p{i}") for i in range(60)])
    last = len(log.entries)
    store = MemorySnapshots()
    checkpoints = Checkpoints(log, store, every=2)
    await checkpoints.state_at(last)
    wanted = {name(m) for m in range(2, last + 1, 2) if kept(m, last - last % 2, 2)}
    assert set(store.saved) == wanted and len(wanted) < last // 2
    plain = Checkpoints(log, None)
    for seq in (3, 9, 13):
        assert doc(await Checkpoints(log, store, every=2).state_at(seq)) == doc(await plain.state_at(seq))
    assert set(store.saved) == wanted, "replaying an old stretch does not write its pruned checkpoints back"
