"""A snapshot fixed at one entry and encoded a step at a time while the fold goes on: the same bytes
as encoding it at once, the state as of that entry whatever the fold does meanwhile, the event
loop run between steps, and snapshots written before the tasks moved last still loaded."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from schemas.events import (
    AnyEvent,
    ServiceCreated,
    TaskAssigned,
    TaskCreated,
    TaskDesiredStateChanged,
    TaskStatusChanged,
)
from schemas.node import Node
from schemas.service import Service, ServiceSpec
from schemas.task import Task, TaskState, TaskStatus
from services.kernel import snapshot
from services.kernel.state import Cluster, ClusterState, Leader
from tests.events import fold


def _task(i: int) -> Task:
    return Task(id=f"t{i}", service_id="s1", slot=i, status=TaskStatus(state=TaskState.NEW))


def _cluster(tasks: int) -> ClusterState:
    events: list[AnyEvent] = [ServiceCreated(service_id="s1", spec=ServiceSpec(name="web"))]
    return fold(events + [TaskCreated(task=_task(i)) for i in range(1, tasks + 1)])


@pytest.mark.parametrize(("tasks", "step"), [(0, 5), (1, 1), (15, 4), (16, 16), (17, 3), (40, 7), (2001, 500),
                                             (70_000, 30_000)])
async def test_encoding_in_steps_gives_the_bytes_of_encoding_at_once(tasks: int, step: int) -> None:
    """Array headers change form at 16 and 65,536 elements, for the whole and for each step."""
    state = _cluster(tasks)
    assert await snapshot.encode_in_steps(snapshot.freeze(state), step) == snapshot.take(state)


async def test_a_frozen_snapshot_holds_the_state_of_its_entry_while_the_fold_goes_on() -> None:
    state = _cluster(30)
    at_freeze = snapshot.take(state)
    frozen = snapshot.freeze(state)
    fold([TaskAssigned(task=state.tasks["t1"], node_id="n1"),
          TaskStatusChanged(task_id="t2", status=TaskStatus(state=TaskState.REJECTED, err="no")),
          TaskDesiredStateChanged(task_id="t3", desired_state=TaskState.SHUTDOWN),
          TaskCreated(task=_task(31))], state)
    assert state.tasks["t1"].node_id == "n1" and len(state.tasks) == 31  # the fold did move on
    data = await snapshot.encode_in_steps(frozen, step=4)
    assert data == at_freeze
    assert snapshot.restore(data).seq == frozen.seq == 31


async def test_the_event_loop_runs_between_steps() -> None:
    turns = 0

    async def count() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counting = asyncio.create_task(count())
    await asyncio.sleep(0)
    before = turns
    await snapshot.encode_in_steps(snapshot.freeze(_cluster(100)), step=10)
    counting.cancel()
    assert turns - before >= 9


class _TasksBeforeLast(msgspec.Struct):
    """`Snapshot` as written until the tasks moved to the end."""

    seq: int
    cluster: Cluster | None
    services: list[Service]
    nodes: list[Node]
    tasks: list[Task]
    last_service_spec_seq: int
    leaders: list[Leader] = []


def test_a_snapshot_written_with_the_tasks_before_the_last_field_loads_the_same() -> None:
    state = _cluster(20)
    earlier = msgspec.msgpack.encode(_TasksBeforeLast(
        seq=state.seq, cluster=state.cluster, services=list(state.services.values()),
        nodes=list(state.nodes.values()), tasks=list(state.tasks.values()),
        last_service_spec_seq=state.last_service_spec_seq, leaders=list(state.leaders.values())))
    assert earlier != snapshot.take(state)
    assert snapshot.take(snapshot.restore(earlier)) == snapshot.take(state)
