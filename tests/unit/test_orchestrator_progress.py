"""Tasks moving forward (created, assigned, pending, at most `running`) wake the orchestrator without
re-deciding replicated services at rest (`ClusterState.progressed_services`, `decide.follows_progress`)."""

from __future__ import annotations

import asyncio

import pytest

from schemas.events import TaskCreated, TaskPending, UpdateStatusChanged
from schemas.service import UpdateStatus
from schemas.task import Task, TaskState
from services.kernel.memlog import MemoryLog
from services.kernel.projection import Projection
from services.kernel.reconcile import Decision
from services.kernel.writer import Writer
from services.orchestrator.decide import Orchestrator, Settings, follows_progress
from services.orchestrator.rebalance import LABEL
from services.orchestrator.service import reconciler
from tests.world import World


def next_pass(w: World, d: Orchestrator) -> Decision:
    """A pass over what changed since the last, as the loop runs it."""
    services, nodes = w.state.take_touched()
    assert services or nodes or w.state.progressed_services, "the loop would not run a pass"
    return w.decide(d, services, nodes)


def test_the_fold_sets_forward_moves_apart_only_for_the_reader_that_keeps_them() -> None:
    w = World()
    w.node("n1")
    sid = w.service("web")
    w.state.take_touched()
    w.fold(TaskCreated(task=Task(id="t1", service_id=sid, slot=1)))
    assert w.state.take_touched() == ({sid}, set())  # not kept (every process but the orchestrator)

    w.state.progressed_services = set()
    w.fold(TaskPending(task_id="t1", err="no suitable node"))
    w.assign("t1", "n1")
    for state in (TaskState.ACCEPTED, TaskState.STARTING, TaskState.RUNNING):
        w.report("t1", state)
    assert w.state.take_touched() == (set(), {"n1"})
    assert w.state.progressed_services == {sid}

    w.report("t1", TaskState.FAILED)
    assert w.state.take_touched() == ({sid}, {"n1"})


def test_a_replicated_service_at_rest_is_not_decided_again_until_a_task_ends() -> None:
    w = World()
    w.node("n1")
    d = Orchestrator(Settings())
    sid = w.service("web", replicas=2)
    w.apply(w.decide(d))
    first, second = w.tasks(sid)
    w.state.remove_task(second.id)  # gone without an event: only a full look at the service sees it
    w.run(first.id, "n1")
    assert next_pass(w, d).intents == []  # woken, but nothing asks to look at `web` again

    w.report(first.id, TaskState.FAILED)
    created = [i.event.task.slot for i in next_pass(w, d).intents if isinstance(i.event, TaskCreated)]
    assert sorted(created) == [1, 2]  # the failure's replacement, and the slot a full look finds empty


@pytest.mark.parametrize("kind", ["updating", "rollback_started", "global", "rebalanced", "removed"])
def test_services_that_act_on_their_tasks_moving_forward_are_still_decided(kind: str) -> None:
    w = World()
    sid = w.service("web", global_=kind == "global", labels={LABEL: "true"} if kind == "rebalanced" else None)
    if kind in ("updating", "rollback_started"):
        w.fold(UpdateStatusChanged(service_id=sid, update_status=UpdateStatus(state=kind)))
    if kind == "removed":
        w.remove_service(sid)
    assert follows_progress(w.state, sid, Settings())


@pytest.mark.parametrize("state", ["", "paused", "completed", "rollback_paused", "rollback_completed"])
def test_a_replicated_service_with_no_update_moving_does_not_follow_its_tasks(state: str) -> None:
    w = World()
    sid = w.service("web")
    if state:
        w.fold(UpdateStatusChanged(service_id=sid, update_status=UpdateStatus(state=state)))
    assert not follows_progress(w.state, sid, Settings())
    assert follows_progress(w.state, sid, Settings(rebalance=True))  # every service rebalances


async def test_progress_folded_during_a_pass_starts_the_next_pass_without_waiting_for_another_entry() -> None:
    """A `TaskPending` folded while a pass appends may be what frees room for a held service; with no
    later entry to wake it, the loop would leave that service held."""
    log = MemoryLog()
    projection = Projection(log)
    await projection.start()
    loop = reconciler(projection, Writer(log, "orchestrator"), Orchestrator(Settings()))
    projection.state.progressed_services = {"web"}
    await asyncio.wait_for(loop._wait(), timeout=5)
