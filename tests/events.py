"""Builders for log entries in tests: events wrapped in envelopes with ascending times."""

from __future__ import annotations

import itertools

from schemas.events import AnyEvent, Envelope
from services.kernel.fold import apply
from services.kernel.ids import format_ns
from services.kernel.routing import subject_for
from services.kernel.state import ClusterState

_clock = itertools.count(1_700_000_000_000_000_000, 1_000_000)


def envelope(event: AnyEvent, actor: str = "test") -> Envelope:
    return Envelope(id=f"e{next(_clock)}", time=format_ns(next(_clock)), actor=actor, event=event)


def fold(events: list[AnyEvent], state: ClusterState | None = None) -> ClusterState:
    """Apply events in order as if they were the next entries of the log, each on the subject a
    writer with this view would give it."""
    state = state or ClusterState()
    for ev in events:
        apply(state, state.seq + 1, envelope(ev), subject_for(ev, state))
    return state
