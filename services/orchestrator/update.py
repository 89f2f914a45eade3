"""Rolling update and rollback (swarm-behaviour section 3), decided from the slots on every pass.

swarmkit runs one updater per service whose `Parallelism` workers each replace a slot, block until
the new task runs, then sleep `Delay`. Here that progress is read off the slots instead: a slot whose
new task is not running yet, or started less than `Delay` ago, holds a worker; free workers take the
next dirty slots in the order the orchestrator keeps them. Nothing lives between passes, so a new
leader carries on an update exactly where the old one was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from schemas.events import ServiceUpdated, UpdateStatusChanged
from schemas.service import Service, TaskSpec, UpdateConfig, UpdateStatus
from schemas.task import RANK, Task, TaskState
from services.kernel import constraints, subjects
from services.kernel.ids import format_ns, parse_ns
from services.kernel.reconcile import Decision, Timer
from services.kernel.state import ClusterState
from services.kernel.writer import Intent
from services.orchestrator import slots, tasks
from services.orchestrator.nodes import wanted_constraints
from services.orchestrator.restart import SECOND

UPDATING, PAUSED, COMPLETED = "updating", "paused", "completed"
ROLLBACK_STARTED, ROLLBACK_PAUSED, ROLLBACK_COMPLETED = "rollback_started", "rollback_paused", "rollback_completed"
IN_FLIGHT = frozenset({UPDATING, ROLLBACK_STARTED})
"""An update or rollback moving on: it waits for its new tasks to run."""
_FAILED = frozenset({TaskState.COMPLETE, TaskState.FAILED, TaskState.REJECTED})
"""Ends a task reaches on its own; `shutdown` and `orphaned` are the managers' doing."""


@dataclass(frozen=True, slots=True)
class UpdatePolicy:
    """UpdateConfig (or RollbackConfig) with swarmkit's defaults for what is absent."""

    parallelism: int = 1
    delay_ns: int = 0
    failure_action: str = "pause"
    monitor_ns: int = 5 * SECOND
    max_failure_ratio: float = 0.0
    start_first: bool = False

    @classmethod
    def of(cls, config: UpdateConfig | None) -> UpdatePolicy:
        if config is None:
            return cls()
        return cls(
            parallelism=1 if config.parallelism is None else config.parallelism,
            delay_ns=config.delay or 0,
            failure_action=config.failure_action or "pause",
            monitor_ns=config.monitor or 5 * SECOND,
            max_failure_ratio=config.max_failure_ratio or 0.0,
            start_first=config.order == "start-first",
        )

    @property
    def settle_ns(self) -> int:
        """How long to watch the last new task before calling the update complete."""
        return self.monitor_ns if self.delay_ns < self.monitor_ns else self.delay_ns + SECOND


def is_dirty(task: Task, service: Service, state: ClusterState) -> bool:
    """Does this task run an older spec than the service's? Same spec version: no. A change of
    placement alone leaves a task whose node still matches where it is. `ForceUpdate` lives in the
    spec, so bumping it makes every task dirty; a replica count is not in it, so scaling makes none."""
    if task.spec_version == service.spec_version:
        return False
    want = _same_pull_options(service.spec.task_template or TaskSpec(), task)
    if task.spec == want:
        return False
    if msgspec.structs.replace(task.spec, placement=want.placement) == want:
        node = state.nodes.get(task.node_id)
        return node is None or not constraints.match_all(wanted_constraints(want), node)
    return True


def _same_pull_options(want: TaskSpec, task: Task) -> TaskSpec:
    """swarmkit#971: new registry credentials alone do not make dirty a task that got its image
    already (observed ready to running, desired running)."""
    pulled = (RANK[task.desired_state] <= RANK[TaskState.RUNNING]
              and RANK[TaskState.READY] <= RANK[task.status.state] <= RANK[TaskState.RUNNING])
    if not pulled or want.container_spec is None or task.spec.container_spec is None:
        return want
    container = msgspec.structs.replace(want.container_spec, pull_options=task.spec.container_spec.pull_options)
    return msgspec.structs.replace(want, container_spec=container)


@dataclass(frozen=True, slots=True)
class _Reading:
    """One slot as the updater sees it."""

    dirty: list[Task]
    """Healthy live tasks on an old spec."""
    fresh: list[Task]
    """Healthy live tasks on the current spec."""
    restarting: bool
    """A live task died: the restart policy has the slot this pass."""
    updatable: bool
    """The slot's node may be updated (global: not paused, drained, down or unmatched)."""

    @property
    def ready_to_update(self) -> bool:
        return bool(self.dirty) and not self.fresh and not self.restarting and self.updatable


def _read(state: ClusterState, service: Service, slot: slots.Slot) -> _Reading:
    live = [t for t in slot.members if tasks.is_live(t)]
    healthy = [t for t in live if not slots.is_dead(t, state)]
    dirty = [t for t in healthy if is_dirty(t, service, state)]
    return _Reading(dirty, [t for t in healthy if t not in dirty], len(healthy) < len(live),
                    updatable=slot.can_run and not slot.must_stop)


@dataclass(slots=True)
class Planned:
    """What the update did per slot, for the slot's own reconciliation in the same pass."""

    created: list[int]
    """Tasks started in each slot (they count toward its history)."""
    replaced: set[str]
    """Tasks it told to stop: a delayed restart replacement on an old spec is replaced, not started."""
    rolled_back: bool = False
    """The service's spec is being rolled back: deciding anything more for it waits for that."""


def plan(state: ClusterState, service: Service, kept: Sequence[slots.Slot], now_ns: int, out: Decision) -> Planned:
    """Move the update on."""
    planned = Planned([0] * len(kept), set())
    status = service.update_status
    if status is not None and status.state in (PAUSED, ROLLBACK_PAUSED):
        return planned
    rolling_back = status is not None and status.state == ROLLBACK_STARTED
    policy = UpdatePolicy.of(service.spec.rollback_config if rolling_back else service.spec.update_config)
    in_progress = status is not None and status.state in IN_FLIGHT
    started_ns = _started_ns(status) if in_progress else now_ns
    readings = [_read(state, service, s) for s in kept]
    # the tasks this update started, per slot (none when no update runs: no creation time to parse)
    ours_by_slot = ([[t for t in r.fresh if tasks.created_ns(t) >= started_ns] for r in readings] if in_progress
                    else [[] for _ in readings])
    ours = [t for slot_ours in ours_by_slot for t in slot_ours]
    fired = _failure_fired(state, service, kept, started_ns, policy, rolling_back, out) if in_progress else None
    if fired is not None:
        planned.rolled_back = fired
        return planned
    to_update = [i for i, r in enumerate(readings) if r.ready_to_update]
    if status is None and any(r.dirty and r.updatable for r in readings):  # a slot mid-update counts too
        out.intents.append(_status(service, UpdateStatus(state=UPDATING, started_at=format_ns(now_ns),
                                                         message="update in progress")))
    for reading in readings:
        if reading.dirty and reading.fresh and (
                not policy.start_first or any(t.status.state == TaskState.RUNNING for t in reading.fresh)):
            # Start-first: the new task runs, the old one goes. Stop-first: the old one should have
            # gone with the pass that created the new one; a conflict dropped its `shutdown`.
            _stop(reading.dirty, planned, out)
    busy = sum(_holds_worker(s, r, o, policy, now_ns, out)
               for s, r, o in zip(kept, readings, ours_by_slot, strict=True))
    free = len(to_update) if policy.parallelism == 0 else max(0, policy.parallelism - busy)
    for i in to_update[:free]:
        planned.created[i] = _replace(state, kept[i], readings[i], policy, now_ns, planned, out)
    left = any(r.updatable and any(t.id not in planned.replaced for t in r.dirty) for r in readings)
    if in_progress and busy == 0 and not any(planned.created) and not left:
        _complete_when_settled(service, ours, started_ns, policy, rolling_back, now_ns, out)
    return planned


def _started_ns(status: UpdateStatus | None) -> int:
    try:
        return parse_ns(status.started_at or "") if status is not None else 0
    except ValueError:
        return 0


def _stop(old: list[Task], planned: Planned, out: Decision) -> None:
    out.intents.extend(tasks.set_desired(t, TaskState.SHUTDOWN) for t in old)
    planned.replaced.update(t.id for t in old)


def _holds_worker(slot: slots.Slot, reading: _Reading, ours: list[Task], policy: UpdatePolicy, now_ns: int,
                  out: Decision) -> int:
    """1 if this slot holds a worker: its new task (of `ours`, this update's) is not running yet, or
    it started less than `Delay` ago (then a timer for when it will not)."""
    if any(RANK[t.status.state] < RANK[TaskState.RUNNING] for t in ours):
        return 1
    if reading.dirty and reading.fresh and not any(t.status.state == TaskState.RUNNING for t in reading.fresh):
        return 1
    running = [t for t in ours if t.status.state == TaskState.RUNNING]
    cooled = max((tasks.status_ns(t) + policy.delay_ns for t in running), default=0)
    if cooled > now_ns:
        out.timers.append(Timer(cooled, service_id=slot.service.id))
        return 1
    return 0


def _replace(state: ClusterState, slot: slots.Slot, reading: _Reading, policy: UpdatePolicy, now_ns: int,
             planned: Planned, out: Decision) -> int:
    """Start-first: the new task runs beside the newest old one, which stops once the new one runs
    (older ones, left by an update this one superseded, stop now). Stop-first: the old ones are told
    to stop and the new one starts once they have."""
    if policy.start_first:
        keep = tasks.newest(reading.dirty)
        _stop([t for t in reading.dirty if t is not keep], planned, out)
        out.intents.append(tasks.create(slot.service, slot=slot.number, node_id=slot.node_id))
        return 1
    _stop(reading.dirty, planned, out)
    held = slots.held_until(state, slot.members, slot.service.spec.task_template, now_ns, now_ns)
    desired = TaskState.RUNNING if held is None else TaskState.READY
    out.intents.append(tasks.create(slot.service, slot=slot.number, node_id=slot.node_id, desired=desired))
    return 1


def _failure_fired(state: ClusterState, service: Service, kept: Sequence[slots.Slot], started_ns: int,
                   policy: UpdatePolicy, rolling_back: bool, out: Decision) -> bool | None:
    """Slots where a task this update started ended on its own count as failed; past `MaxFailureRatio`
    the failure action fires: pause, roll back, or (continue) nothing. A rollback never rolls back.
    None when nothing fired, else whether it rolled back."""
    if policy.failure_action == "continue":
        return None
    failed = [t for s in kept for t in s.members
              if t.status.state in _FAILED and tasks.created_ns(t) >= started_ns
              and not is_dirty(t, service, state)]
    failed_slots = {slots.slot_key(t) for t in failed}  # restarts of a failed new task are not new failures
    if not failed or len(failed_slots) / max(1, len(kept)) <= policy.max_failure_ratio:
        return None
    culprit = tasks.latest(failed).id
    status = service.update_status
    assert status is not None
    if rolling_back:
        message = f"rollback paused due to failure or early termination of task {culprit}"
        out.intents.append(_status(service, msgspec.structs.replace(status, state=ROLLBACK_PAUSED, message=message)))
        return False
    if policy.failure_action == "rollback" and service.previous_spec is not None:
        out.intents.append(Intent(ServiceUpdated(service_id=service.id, spec=service.previous_spec, rollback=True,
                                                 failed_task=culprit),
                                  expect_seq=service.version.index, expect_subject=subjects.service_all(service.id)))
        return True
    message = f"update paused due to failure or early termination of task {culprit}"
    out.intents.append(_status(service, msgspec.structs.replace(status, state=PAUSED, message=message)))
    return False


def _complete_when_settled(service: Service, ours: list[Task], started_ns: int, policy: UpdatePolicy,
                           rolling_back: bool, now_ns: int, out: Decision) -> None:
    """Every slot is done: watch the newest task for `Monitor` more, then call it complete."""
    last = max((tasks.status_ns(t) for t in ours if t.status.state == TaskState.RUNNING), default=started_ns)
    due = last + policy.settle_ns
    if now_ns < due:
        out.timers.append(Timer(due, service_id=service.id))
        return
    status = service.update_status
    assert status is not None
    done = (UpdateStatus(state=ROLLBACK_COMPLETED, message="rollback completed") if rolling_back
            else UpdateStatus(state=COMPLETED, message="update completed"))
    out.intents.append(_status(service, msgspec.structs.replace(
        done, started_at=status.started_at, completed_at=format_ns(now_ns))))


def _status(service: Service, status: UpdateStatus) -> Intent:
    return Intent(UpdateStatusChanged(service_id=service.id, update_status=status),
                  expect_seq=service.version.index, expect_subject=subjects.service_all(service.id))
