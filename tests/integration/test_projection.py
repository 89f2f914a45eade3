"""Projections on a real stream: catching up at start, read-your-writes, and start from a snapshot."""

from __future__ import annotations

import asyncio

from schemas.events import ServiceCreated, TaskCreated, TaskStatusChanged
from schemas.service import ServiceSpec
from schemas.task import Task, TaskState, TaskStatus
from services.kernel import snapshot
from services.kernel.jetstream import JetStreamLog
from services.kernel.projection import Projection
from services.kernel.snapshot import ObjectStoreSnapshots
from services.kernel.state import ClusterState
from services.kernel.writer import Intent, Writer


async def _seed(jslog: JetStreamLog, tasks: int) -> Writer:
    writer = Writer(jslog, "test")
    state = ClusterState()
    intents = [Intent(ServiceCreated(service_id="s1", spec=ServiceSpec(name="web")))]
    intents += [Intent(TaskCreated(task=Task(id=f"t{i}", service_id="s1", slot=i + 1))) for i in range(tasks)]
    await writer.append(intents, state)
    return writer


async def test_start_returns_only_once_caught_up(jslog: JetStreamLog) -> None:
    await _seed(jslog, 50)
    projection = Projection(jslog)
    await projection.start()
    assert projection.state.seq == 51 and len(projection.state.tasks) == 50
    await projection.stop()


async def test_wait_for_gives_read_your_writes(jslog: JetStreamLog) -> None:
    writer = await _seed(jslog, 1)
    projection = Projection(jslog)
    await projection.start()
    [seq] = await writer.append(
        [Intent(TaskStatusChanged(task_id="t0", status=TaskStatus(state=TaskState.RUNNING)))], projection.state
    )
    assert isinstance(seq, int)
    await asyncio.wait_for(projection.wait_for(seq), 5)
    assert projection.state.tasks["t0"].status.state == TaskState.RUNNING
    await projection.stop()


async def test_a_filtered_projection_sees_only_its_subjects(jslog: JetStreamLog) -> None:
    await _seed(jslog, 3)
    projection = Projection(jslog, filter_subject="shoal.evt.service.>")
    await projection.start()
    assert set(projection.state.services) == {"s1"} and not projection.state.tasks
    await projection.stop()


async def test_start_from_snapshot_plus_tail_equals_full_replay(jslog: JetStreamLog) -> None:
    writer = await _seed(jslog, 20)
    store = ObjectStoreSnapshots(jslog.js, jslog.stream)
    first = Projection(jslog, snapshots=store, snapshot_name="test")
    await first.start()
    await first.save_snapshot()
    await first.stop()
    await writer.append([Intent(TaskCreated(task=Task(id="late", service_id="s1", slot=99)))], ClusterState())
    resumed = Projection(jslog, snapshots=store, snapshot_name="test")
    await resumed.start()
    full = Projection(jslog)
    await full.start()
    assert snapshot.take(resumed.state) == snapshot.take(full.state) and "late" in resumed.state.tasks
    assert sum(resumed.state.stats.applied.values()) == 1
    await resumed.stop()
    await full.stop()
