"""The writing side of the log: wrap decided events in envelopes and append them, pipelined.

Decisions are pure and return bare events; this shell stamps each with an id (also its
`Nats-Msg-Id`, so a retried append is never stored twice), the time, the actor and the current
trace context (or the one given per intent, or trace headers the caller made), then appends the whole
batch without awaiting acks one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry import propagate
from opentelemetry.context import Context

from schemas.codec import encode
from schemas.events import AnyEvent, Envelope, LeaderWrote
from services.kernel import subjects
from services.kernel.eventlog import MAX_ATOMIC, Append, AppendResult, Conflict, EventLog, all_settled
from services.kernel.ids import format_ns, new_id, now
from services.kernel.metrics import APPEND_CONFLICTS, EVENTS_APPENDED
from services.kernel.routing import subject_for
from services.kernel.state import ClusterState


@dataclass(frozen=True, slots=True)
class Intent:
    """An event to append and, for a compare-and-set, the sequence the writer believed was last."""

    event: AnyEvent
    expect_seq: int | None = None
    expect_subject: str | None = None


@dataclass(frozen=True, slots=True)
class Term:
    """A leader's term: the lease revision it won and the sequence of its `LeaderElected` entry."""

    loop: str
    term: int
    seq: int


class Deposed(Exception):
    """A newer leader's term is in the log: this process must stop acting for the loop at once."""


def _carried(context: Context | None) -> dict[str, str] | None:
    """The trace headers of `context` (None: the current one's); None when there is nothing to carry."""
    headers: dict[str, str] = {}
    propagate.inject(headers, context=context)
    return headers or None


class Writer:
    """With a `term`, every append is fenced: it goes as atomic batches, each led by a `LeaderWrote`
    entry that compare-and-sets on the term's `LeaderElected` entry. Once a newer leader has written
    its own `LeaderElected`, a late batch of this one is refused whole by the server."""

    def __init__(self, eventlog: EventLog, actor: str, term: Term | None = None) -> None:
        self.log = eventlog
        self.actor = actor
        self.term = term

    def seal(self, intent: Intent, state: ClusterState, context: Context | None = None) -> Append:
        return self.seal_with_headers(intent, state, _carried(context))

    def seal_with_headers(self, intent: Intent, state: ClusterState, headers: dict[str, str] | None,
                          time_ns: int | None = None) -> Append:
        """`seal` carrying `headers` as they are, for a writer that made its trace headers itself (an
        agent's report while no span is recorded: `traces.child_traceparent`). `time_ns`: when the
        event happened, if that was before now (a report sealed only when it is sent)."""
        env = Envelope(id=new_id(), time=now() if time_ns is None else format_ns(time_ns), actor=self.actor,
                       event=intent.event)
        return Append(
            subject=subject_for(intent.event, state),
            data=encode(env),
            msg_id=env.id,
            expect_seq=intent.expect_seq,
            expect_subject=intent.expect_subject,
            headers=headers,
        )

    async def append(self, intents: Sequence[Intent], state: ClusterState,
                     contexts: Sequence[Context | None] | None = None) -> list[AppendResult]:
        """`contexts`, one per intent, names the trace each continues (default: the current one).
        A pass's intents share a few contexts, so each is injected once, not once per intent."""
        per_intent = contexts if contexts is not None else [None] * len(intents)
        injected: dict[int, dict[str, str] | None] = {}
        appends = []
        for intent, context in zip(intents, per_intent, strict=True):
            if id(context) not in injected:
                injected[id(context)] = _carried(context)
            appends.append(self.seal_with_headers(intent, state, injected[id(context)]))
        results = await (self.log.append(appends) if self.term is None else self._fenced(appends, self.term, state))
        for intent, result in zip(intents, results, strict=True):
            kind = type(intent.event).__name__
            if isinstance(result, Conflict):
                APPEND_CONFLICTS.labels(writer=self.actor.split(":")[0], event=kind).inc()
            else:
                EVENTS_APPENDED.labels(event=kind).inc()
        return results

    async def _fenced(self, appends: list[Append], term: Term, state: ClusterState) -> list[AppendResult]:
        size = MAX_ATOMIC - 1
        chunks = [appends[i : i + size] for i in range(0, len(appends), size)]
        done = await all_settled(*(self._fenced_batch(chunk, term, state) for chunk in chunks))
        return [result for chunk in done for result in chunk]

    async def _fenced_batch(self, chunk: list[Append], term: Term, state: ClusterState) -> list[AppendResult]:
        scope = subjects.leader_term(term.loop)
        fence = self.seal(Intent(LeaderWrote(loop=term.loop, term=term.term), expect_seq=term.seq,
                                 expect_subject=scope), state)
        results = await self.log.append_atomic([fence, *chunk])
        if isinstance(results[0], Conflict) and await self.log.last_seq(scope) != term.seq:
            raise Deposed(f"{term.loop}: a leader newer than term {term.term} is in the log")
        return results[1:]
