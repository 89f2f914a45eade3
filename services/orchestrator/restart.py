"""Restart policy (swarm-behaviour 2.5): whether a dead task gets a replacement, and when it starts.

swarmkit keeps restart history in memory and rebuilds it on leader start from the retained tasks;
here it is always derived from those tasks (same slot, same spec version), so there is nothing to
rebuild and a new leader decides exactly as the old one would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.service import TaskSpec
from schemas.task import Task, TaskState
from services.orchestrator.tasks import created_ns

SECOND = 1_000_000_000
DEFAULT_DELAY_NS = 5 * SECOND
STOP_WAIT_NS = 60 * SECOND
"""A replacement starts at the latest this long after it was created, even if the old task never
reported that it stopped."""


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    condition: str = "any"
    delay_ns: int = DEFAULT_DELAY_NS
    max_attempts: int = 0
    window_ns: int = 0

    @classmethod
    def of(cls, spec: TaskSpec | None) -> RestartPolicy:
        p = spec.restart_policy if spec is not None else None
        if p is None:
            return cls()
        return cls(
            condition=p.condition or "any",
            delay_ns=DEFAULT_DELAY_NS if p.delay is None else p.delay,
            max_attempts=p.max_attempts or 0,
            window_ns=p.window or 0,
        )

    def wants_restart(self, dead: Task) -> bool:
        """The condition alone: `none` never, `on-failure` unless it completed, `any` always."""
        if self.condition == "none":
            return False
        return not (self.condition == "on-failure" and dead.status.state == TaskState.COMPLETE)

    def attempts_left(self, dead: Task, slot: Sequence[Task], now_ns: int) -> bool:
        """MaxAttempts counts restarts of this slot since its spec version last changed (the oldest
        task of that version was not a restart), or only those inside `Window` when one is set."""
        if self.max_attempts <= 0:
            return True
        same_version = sorted(created_ns(t) for t in slot if t.spec_version == dead.spec_version)
        restarts = same_version[1:]
        if self.window_ns > 0:
            restarts = [c for c in restarts if c >= now_ns - self.window_ns]
        return len(restarts) < self.max_attempts

    def should_restart(self, dead: Task, slot: Sequence[Task], now_ns: int) -> bool:
        return self.wants_restart(dead) and self.attempts_left(dead, slot, now_ns)


def history_limit(default: int, spec: TaskSpec | None) -> int:
    """Tasks kept per slot; with MaxAttempts the history must hold every attempt it counts."""
    policy = RestartPolicy.of(spec)
    return policy.max_attempts + 1 if policy.max_attempts > 0 and default >= 0 else default
