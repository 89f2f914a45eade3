"""Every reader that folds the log ignores a write made under the waiting task's prefix after the
task was assigned: the server let it through (`subjects.task_all`), so each fold must refuse it the
same way, or the api, the audit and the deciding loops would each see a different cluster."""

from __future__ import annotations

from pathlib import Path

from schemas.codec import encode
from schemas.events import AnyEvent, TaskAssigned, TaskCreated, TaskDesiredStateChanged
from schemas.task import Task, TaskState
from services.api.checkpoints import Checkpoints
from services.audit.auditor import Auditor
from services.audit.journal import Journal
from services.kernel import subjects
from services.kernel.eventlog import Append
from services.kernel.memlog import MemoryLog
from services.kernel.projection import Projection
from services.kernel.state import ClusterState
from tests.events import envelope

TASK = Task(id="t1", service_id="s1", slot=1)
STALE = TaskDesiredStateChanged(task_id="t1", desired_state=TaskState.SHUTDOWN)
ENTRIES: list[tuple[str, AnyEvent]] = [
    (subjects.task("", "t1", "desired"), TaskCreated(task=TASK)),
    (subjects.task("n1", "t1", "placement"), TaskAssigned(task=TASK, node_id="n1")),
    (subjects.task("", "t1", "desired"), STALE),  # the orchestrator's view still had t1 waiting
]


async def _log() -> MemoryLog:
    log = MemoryLog()
    await log.append([Append(subject, encode(envelope(ev)), f"m{i}") for i, (subject, ev) in enumerate(ENTRIES)])
    return log


def _assert_ignored(state: ClusterState) -> None:
    task = state.tasks["t1"]
    assert (task.node_id, task.desired_state, task.version.index) == ("n1", TaskState.RUNNING, 2)
    assert state.seq == 3 and state.stats.ignored["TaskDesiredStateChanged"] == 1


async def test_a_projection_ignores_it() -> None:
    projection = Projection(await _log())
    await projection.start()
    await projection.stop()
    _assert_ignored(projection.state)


async def test_a_point_in_time_question_ignores_it() -> None:
    _assert_ignored(await Checkpoints(await _log(), None).state_at(3))


async def test_the_audit_ignores_it_while_following_and_when_it_rebuilds(tmp_path: Path) -> None:
    log = await _log()
    following = Auditor(Journal(tmp_path / "audit.jsonl"))
    await following.start(log)
    assert await following.handle(log.entries)
    _assert_ignored(following.state)
    rebuilt = Auditor(Journal(tmp_path / "audit.jsonl"))
    assert await rebuilt.start(log) == 3
    _assert_ignored(rebuilt.state)
