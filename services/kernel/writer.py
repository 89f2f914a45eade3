"""The writing side of the log: wrap decided events in envelopes and append them, pipelined.

Decisions are pure and return bare events; this shell stamps each with an id (also its
`Nats-Msg-Id`, so a retried append is never stored twice), the time, the actor and the current
trace context (or the one given per intent), then appends the whole batch without awaiting acks one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry import propagate
from opentelemetry.context import Context

from schemas.codec import encode
from schemas.events import AnyEvent, Envelope
from services.kernel.eventlog import Append, AppendResult, Conflict, EventLog
from services.kernel.ids import new_id, now
from services.kernel.metrics import APPEND_CONFLICTS, EVENTS_APPENDED
from services.kernel.routing import subject_for
from services.kernel.state import ClusterState


@dataclass(frozen=True, slots=True)
class Intent:
    """An event to append and, for a compare-and-set, the sequence the writer believed was last."""

    event: AnyEvent
    expect_seq: int | None = None
    expect_subject: str | None = None


class Writer:
    def __init__(self, eventlog: EventLog, actor: str) -> None:
        self.log = eventlog
        self.actor = actor

    def seal(self, intent: Intent, state: ClusterState, context: Context | None = None) -> Append:
        env = Envelope(id=new_id(), time=now(), actor=self.actor, event=intent.event)
        headers: dict[str, str] = {}
        propagate.inject(headers, context=context)
        return Append(
            subject=subject_for(intent.event, state),
            data=encode(env),
            msg_id=env.id,
            expect_seq=intent.expect_seq,
            expect_subject=intent.expect_subject,
            headers=headers or None,
        )

    async def append(self, intents: Sequence[Intent], state: ClusterState,
                     contexts: Sequence[Context | None] | None = None) -> list[AppendResult]:
        """`contexts`, one per intent, names the trace each continues (default: the current one)."""
        per_intent = contexts if contexts is not None else [None] * len(intents)
        results = await self.log.append([self.seal(i, state, c) for i, c in zip(intents, per_intent, strict=True)])
        for intent, result in zip(intents, results, strict=True):
            kind = type(intent.event).__name__
            if isinstance(result, Conflict):
                APPEND_CONFLICTS.labels(writer=self.actor.split(":")[0], event=kind).inc()
            else:
                EVENTS_APPENDED.labels(event=kind).inc()
        return results
