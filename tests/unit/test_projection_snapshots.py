"""A projection's periodic snapshots: their cost, which grows with the state, is spread over at least as
many entries as the last snapshot held tasks, and a start from one replays a bounded tail."""

from __future__ import annotations

import asyncio

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


async def _fold(appends: list[Append], store: _Recording) -> tuple[MemoryLog, Projection]:
    """Entries arrive one at a time, as from a server, so each snapshot's save is done before the next."""
    log = MemoryLog()
    projection = Projection(log, snapshots=store, snapshot_name="test", snapshot_every=10)
    await projection.start()
    for append in appends:
        [seq] = await log.append([append])
        assert isinstance(seq, int)
        await projection.wait_for(seq)
        await asyncio.sleep(0)
    await projection.stop()
    return log, projection


async def test_snapshots_come_further_apart_as_the_state_grows() -> None:
    """A creation burst (one task per entry) doubles the interval each time; once the cluster stops
    growing, the interval stays at its size, however long the log gets."""
    store = _Recording()
    await _fold([_created(i) for i in range(1, 161)] + [_reported(n % 160 + 1, n) for n in range(640)], store)
    assert store.at == [10, 20, 40, 80, 160, 320, 480, 640, 800]


async def test_a_start_from_the_newest_snapshot_replays_fewer_entries_than_the_state_holds_tasks() -> None:
    store = _Recording()
    log, _ = await _fold([_created(i) for i in range(1, 101)] + [_reported(n % 100 + 1, n) for n in range(250)], store)
    resumed = Projection(log, snapshots=store, snapshot_name="test", snapshot_every=10)
    replayed: list[int] = []
    resumed.listeners.append(lambda seq, _: replayed.append(seq))
    await resumed.start()
    await resumed.stop()
    assert resumed.state.seq == 350 and len(resumed.state.tasks) == 100
    assert 0 < len(replayed) < 100 and replayed[0] == store.at[-1] + 1
