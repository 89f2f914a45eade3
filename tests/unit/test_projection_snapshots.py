"""A projection's periodic snapshots: their cost, which grows with the state, is spread over at least as
many entries as the last snapshot held tasks (stretched at random, so processes folding the same log
do not all write theirs at once), and a start from one replays a bounded tail."""

from __future__ import annotations

import asyncio
import random

from schemas.codec import encode
from schemas.events import TaskCreated, TaskStatusChanged
from schemas.task import Task, TaskState, TaskStatus
from services.kernel import snapshot, subjects
from services.kernel.eventlog import Append
from services.kernel.memlog import MemoryLog
from services.kernel.projection import Projection
from services.kernel.snapshot import MemorySnapshots
from tests.events import envelope


class _Recording(MemorySnapshots):
    def __init__(self) -> None:
        super().__init__()
        self.at: list[int] = []
        """The sequence each saved snapshot covers."""

    async def save(self, name: str, data: bytes) -> None:
        self.at.append(snapshot.restore(data).seq)
        await super().save(name, data)


def _created(i: int) -> Append:
    task = Task(id=f"t{i}", service_id="s", slot=i, status=TaskStatus(state=TaskState.NEW))
    return Append(subjects.task("", task.id, "desired"), encode(envelope(TaskCreated(task=task))), f"c{i}")


def _reported(i: int, n: int) -> Append:
    status = TaskStatus(state=TaskState.RUNNING, message=f"report {n}")
    event = TaskStatusChanged(task_id=f"t{i}", status=status)
    return Append(subjects.task("n1", f"t{i}", "status"), encode(envelope(event)), f"r{i}-{n}")


async def _fold(appends: list[Append], store: _Recording, seed: int = 0) -> tuple[MemoryLog, Projection]:
    """Entries arrive one at a time, as from a server, so each snapshot's save is done before the next."""
    log = MemoryLog()
    projection = Projection(log, snapshots=store, snapshot_name="test", snapshot_every=10, rng=random.Random(seed))
    await projection.start()
    for append in appends:
        [seq] = await log.append([append])
        assert isinstance(seq, int)
        await projection.wait_for(seq)
        await asyncio.sleep(0)
    await projection.stop()
    return log, projection


async def test_snapshots_come_further_apart_as_the_state_grows() -> None:
    """A creation burst (one task per entry) at least doubles the interval each time; once the cluster
    stops growing, the interval stays between its size and 1.5 times it, however long the log gets."""
    store = _Recording()
    await _fold([_created(i) for i in range(1, 161)] + [_reported(n % 160 + 1, n) for n in range(640)], store)
    assert store.at[0] == 10
    for before, at in zip(store.at, store.at[1:], strict=False):
        tasks = min(before, 160)
        assert max(10, tasks) <= at - before <= max(10, int(tasks * 1.5)), store.at
    assert 800 - store.at[-1] <= 240 and len(store.at) >= 6


async def test_two_processes_folding_the_same_log_write_their_snapshots_at_different_entries() -> None:
    appends = [_created(i) for i in range(1, 161)] + [_reported(n % 160 + 1, n) for n in range(640)]
    one, other = _Recording(), _Recording()
    await _fold(appends, one, seed=1)
    await _fold(appends, other, seed=2)
    assert one.at[0] == other.at[0] == 10  # the first comes after `snapshot_every`, for everyone
    assert set(one.at[1:]).isdisjoint(other.at[1:]), (one.at, other.at)


async def test_a_start_from_the_newest_snapshot_replays_fewer_entries_than_one_and_a_half_times_the_tasks() -> None:
    store = _Recording()
    log, _ = await _fold([_created(i) for i in range(1, 101)] + [_reported(n % 100 + 1, n) for n in range(250)], store)
    newest = store.at[-1]
    resumed = Projection(log, snapshots=store, snapshot_name="test", snapshot_every=10)
    replayed: list[int] = []
    resumed.listeners.append(lambda seq, _: replayed.append(seq))
    await resumed.start()
    await resumed.stop()
    assert resumed.state.seq == 350 and len(resumed.state.tasks) == 100
    assert 0 < len(replayed) < 150 and replayed[0] == newest + 1
