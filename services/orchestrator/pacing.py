"""Fresh tasks are created about as fast as the scheduler places them, not all at once.

A service of 100,000 replicas, or a thousand services created together, used to become 100,000
`TaskCreated` entries in a few seconds, which the scheduler then took a minute to place: the last
task waited a minute between created and assigned, and every process held the whole backlog as
tasks. Now a pass creates tasks for new slots only while fewer than `limit` tasks wait for the
scheduler's first word on them (state `new`); a service cut short is *held*, and gets the room that
placements free, first held first served. The wait does not go away; it moves from the tasks to the
services that have not created them yet, where it costs nothing, so the scheduler's queue stays
short and a task is placed within a fraction of a second of being created. A task the scheduler
cannot place leaves `new` for `pending`, so unplaceable tasks never hold back the rest.

Only new slots wait: scaling up, a new service, a global service's new node, a job's next runs.
Replacements (restarts, rolling updates, a drained or lost node's tasks) are never held back:
they stand in for work that was running, and holding them would leave services short for longer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.task import TaskState
from services.kernel.state import ClusterState

DEFAULT_UNPLACED_LIMIT = 200
"""A fraction of a second of placements on two cores: p99 ~47 s -> 177-207 ms at 100,000 tasks, at
the rate of 500 within the machine's noise (docs/orchestration/pacing.md)."""

_WANTED = (TaskState.READY._value_, TaskState.RUNNING._value_, TaskState.COMPLETE._value_)
"""Desired states the scheduler places a task for: a replacement waiting out its restart delay
(`ready`) is placed too, and counts, so new slots wait behind a burst of replacements."""


def unplaced(state: ClusterState) -> int:
    """Tasks still wanted that the scheduler has neither placed nor declared pending."""
    new = state.task_tally.get(TaskState.NEW._value_, {})
    return sum(new.get(desired, 0) for desired in _WANTED)


@dataclass(slots=True)
class Pacing:
    """One pass's room for fresh tasks (`None`: no limit), and the services it cut short."""

    room: int | None
    held: dict[str, None] = field(default_factory=dict)
    """Services that wanted more fresh tasks than the room left, in the order they were cut (a dict
    for an ordered set)."""

    @classmethod
    def of(cls, state: ClusterState, limit: int) -> Pacing:
        """`limit <= 0` switches pacing off."""
        return cls(None if limit <= 0 else max(0, limit - unplaced(state)))

    def grant(self, service_id: str, wanted: int) -> int:
        """How many of `wanted` fresh tasks the service may create now; the rest wait, held."""
        if self.room is None or wanted <= 0:
            return max(0, wanted)
        granted = min(wanted, self.room)
        self.room -= granted
        if granted < wanted:
            self.hold(service_id)
        return granted

    def hold(self, service_id: str) -> None:
        self.held.setdefault(service_id)

    def full(self) -> bool:
        return self.room is not None and self.room <= 0
