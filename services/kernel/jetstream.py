"""`EventLog` on NATS JetStream: one immutable stream, pipelined compare-and-set appends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from services.kernel import snapshot
from services.kernel.eventlog import (
    MAX_ATOMIC,
    Append,
    AppendResult,
    Conflict,
    Entry,
    Following,
    LogUnavailable,
    OnEntry,
    all_settled,
)
from services.kernel.ids import new_id
from services.kernel.nats_client import ShoalClient
from services.kernel.subjects import ALL, LAYOUT, TASKS, Filter

log = logging.getLogger(__name__)

WRONG_LAST_SEQUENCE = 10071
WRONG_LAST_SEQUENCE_UNKNOWN = 10164
"""The same refusal without the sequence: what a replicated stream answers (and any stream while
another write to the subject is in flight). The sequence is then read with one more request."""
WRONG_LAST = (WRONG_LAST_SEQUENCE, WRONG_LAST_SEQUENCE_UNKNOWN)
DUPLICATE_IN_BATCH = 10201
"""An atomic batch holds a `Nats-Msg-Id` already stored: a retry of a batch that was committed. The
refusal carries no sequence (`"seq": 0`, nats-server 2.12)."""
MIN_API_LEVEL = 2
"""nats-server >= 2.12: older servers silently ignore the wildcard compare-and-set header."""

_MAX_TRIES = 5


LAYOUT_KEY = "shoal.subjects"
"""Stream metadata naming the subject layout its task entries are written in (`subjects.LAYOUT`)."""


class ServerTooOld(RuntimeError):
    pass


class StreamRefused(RuntimeError):
    """No process may use the stream it was given; the message says what the operator can do."""


class OldSubjectLayout(StreamRefused):
    """The stream holds task entries written by an earlier Shoal, under `task.<node>.<task>`: every
    compare-and-set on those tasks would be scoped to `task.<task>.>`, miss their entries and
    conflict forever, so no process may write to it."""


class SubjectsTaken(StreamRefused):
    """Another stream on the server holds Shoal's subjects: a stream's subjects may not overlap another's,
    so one NATS server (one JetStream account) holds one Shoal cluster's log."""


async def ensure_stream(nc: Client, name: str, replicas: int = 1, duplicate_window_s: float = 120) -> None:
    """Create the stream if missing; refuse servers too old for the compare-and-set rules we rely on,
    and streams whose task entries an earlier Shoal wrote in another subject layout (`OldSubjectLayout`).
    Every process starts here, so none writes to such a stream."""
    info = json.loads((await nc.request("$JS.API.INFO", b"", timeout=5)).data)
    level = int(info.get("api", {}).get("level", 0))
    if level < MIN_API_LEVEL:
        raise ServerTooOld(f"nats-server JetStream API level {level} < {MIN_API_LEVEL}: use nats-server >= 2.12")
    js = nc.jetstream()
    config = api.StreamConfig(
        name=name,
        subjects=[ALL],
        storage=api.StorageType.FILE,
        num_replicas=replicas,
        deny_delete=True,
        deny_purge=True,
        duplicate_window=duplicate_window_s,
        allow_direct=True,
        allow_atomic=True,
        metadata={LAYOUT_KEY: LAYOUT},
    )
    try:
        existing = await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        await _refuse_another_clusters(js, name)
        await js.add_stream(config)
        log.info("stream created", extra={"stream": name, "replicas": replicas})
        return
    metadata = await _refuse_an_old_layout(js, name, existing)
    if not existing.config.allow_atomic or metadata.get(LAYOUT_KEY) != LAYOUT:  # created by an earlier Shoal
        # leaders' fenced batches need atomic batches; an empty-of-tasks stream is marked as ours
        await js.update_stream(replace(existing.config, allow_atomic=True, metadata={**metadata, LAYOUT_KEY: LAYOUT}))
        log.info("stream updated", extra={"stream": name, "allow_atomic": True, LAYOUT_KEY: LAYOUT})


async def check_stream(nc: Client, name: str) -> None:
    """`StreamRefused` as `ensure_stream` would raise it, creating and changing nothing: `shoal up`
    asks before it says the cluster is up, as its supervisor would restart refused processes forever."""
    js = nc.jetstream()
    try:
        existing = await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        await _refuse_another_clusters(js, name)
        return
    await _refuse_an_old_layout(js, name, existing)


async def _refuse_another_clusters(js: JetStreamContext, name: str) -> None:
    """`SubjectsTaken` if another stream holds Shoal's subjects, as the server would refuse to create
    `name` (and a process retrying the creation would wait for ever, saying only that JetStream balks)."""
    try:
        other = await js.find_stream_name_by_subject(ALL)
    except nats.js.errors.NotFoundError:
        return
    raise SubjectsTaken(
        f"cannot create stream {name}: stream {other} on this NATS server already holds Shoal's subjects "
        f"({ALL}), and one server holds one Shoal cluster's log. Use that cluster (--stream {other} / "
        f"SHOAL_STREAM={other}), or remove it and its snapshots (`nats stream rm {other}`, "
        f"`nats object rm {snapshot.bucket(other)}`), or use another NATS server.")


async def _refuse_an_old_layout(js: JetStreamContext, name: str, existing: api.StreamInfo) -> dict[str, str]:
    """The stream's metadata, unless it holds tasks of an earlier layout (`OldSubjectLayout`)."""
    metadata = existing.config.metadata or {}
    if metadata.get(LAYOUT_KEY) != LAYOUT and await _holds_tasks(js, name):
        raise OldSubjectLayout(
            f"stream {name} holds task entries in an earlier subject layout ({LAYOUT_KEY}="
            f"{metadata.get(LAYOUT_KEY, 'task.<node>.<task>')!r}); this Shoal writes {LAYOUT!r} "
            f"(shoal.evt.assigned.<node>.<task>.<leaf> once a task is assigned) and cannot change "
            f"those tasks. Stop every Shoal process, remove this stream and its snapshots "
            f"(`nats stream rm {name}`, `nats object rm {snapshot.bucket(name)}`) and create the services "
            f"again, or start the new cluster on another NATS server (`shoal up --state-dir` on a new "
            f"directory starts one).")
    return metadata


async def _holds_tasks(js: JetStreamContext, name: str) -> bool:
    """One lookup of the last entry under `shoal.evt.task.>`, done once per stream not yet marked."""
    try:
        await js.get_last_msg(name, TASKS)
    except nats.js.errors.NotFoundError:
        return False
    return True


def _parse_reply(reply: str) -> tuple[int, int]:
    """(stream sequence, pending) from a `$JS.ACK` reply subject, without nats-py's slow metadata."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[8])
    return int(tokens[7]), int(tokens[10])


class _Following:
    def __init__(self, sub: Any) -> None:
        self.sub = sub

    async def stop(self) -> None:
        with contextlib.suppress(nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError):
            await self.sub.unsubscribe()


class _Refused(Exception):
    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


class JetStreamLog:
    """Appends are pipelined by hand: a core publish with a reply inbox per entry and a window of
    entries in flight. (nats-py's `publish_async` raises API errors inside its reply callback, so a
    compare-and-set conflict would never resolve; this is also the fastest pattern measured.)"""

    def __init__(self, nc: Client, stream: str, ack_timeout: float = 5.0, max_pending: int = 1000,
                 tries: int = _MAX_TRIES) -> None:
        self.nc = nc
        self.stream = stream
        self.js = nc.jetstream()
        self.ack_timeout = ack_timeout
        self.tries = tries
        self._window = asyncio.Semaphore(max_pending)
        self._inbox = ""
        self._acks: dict[str, asyncio.Future[int]] = {}
        self._next = 0

    async def append(self, batch: Sequence[Append]) -> list[AppendResult]:
        futures = [await self._publish(a) for a in batch]
        return await all_settled(*(self._settle(a, f) for a, f in zip(batch, futures, strict=True)))

    async def _on_ack(self, msg: Msg) -> None:
        future = self._acks.pop(msg.subject, None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            reply = json.loads(msg.data)
        except ValueError:
            future.set_exception(_Refused(0, "unreadable acknowledgement"))
            return
        error = reply.get("error")
        if error:
            future.set_exception(_Refused(int(error.get("err_code", 0)), str(error.get("description", ""))))
        else:
            future.set_result(int(reply["seq"]))

    async def append_atomic(self, batch: Sequence[Append]) -> list[AppendResult]:
        """One atomic batch: every entry but the last is sent without a reply, the last commits it.
        A time-out re-sends the whole batch under a new batch id with the same `Nats-Msg-Id`s, so a
        batch the server had committed is refused as a duplicate and never stored twice."""
        if not 0 < len(batch) <= MAX_ATOMIC:
            raise ValueError(f"an atomic batch holds 1 to {MAX_ATOMIC} entries, not {len(batch)}")
        for attempt in range(self.tries):
            future = await self._send_batch(batch)
            try:
                async with asyncio.timeout(self.ack_timeout):
                    last = await future
                return list(range(last - len(batch) + 1, last + 1))
            except _Refused as e:
                if e.code in WRONG_LAST:
                    last = await self._conflict_seq(e, None)
                    return [Conflict(a.subject, last) for a in batch]
                if e.code == DUPLICATE_IN_BATCH and attempt:
                    return await self._committed_before(batch)
                raise LogUnavailable(f"atomic batch to {batch[0].subject} refused: {e.description}") from e
            except (TimeoutError, nats.js.errors.NoStreamResponseError):
                await asyncio.sleep(min(0.1 * 2**attempt, 1.0))
        raise LogUnavailable(f"no acknowledgement for an atomic batch after {self.tries} tries")

    async def _committed_before(self, batch: Sequence[Append]) -> list[AppendResult]:
        """A retry refused as a duplicate: an earlier attempt committed (a batch is stored whole or not
        at all) and its reply was lost. The refusal names no sequence, so the batch is found again:
        the newest entry on its first or last entry's subject, if that is still the entry sent (its
        `Nats-Msg-Id`), places the whole batch, which is stored contiguously. If both subjects have
        moved on since, every result is a `Conflict`: the caller reads the log and decides again
        (safe, only counted as a conflict)."""
        for i in dict.fromkeys((0, len(batch) - 1)):
            seq = await self.last_seq(batch[i].subject)
            if seq and await self._is_mine(seq, batch[i].msg_id):
                return list(range(seq - i, seq - i + len(batch)))
        stored = await self.last_seq()
        return [Conflict(a.subject, stored) for a in batch]

    async def _send_batch(self, batch: Sequence[Append]) -> asyncio.Future[int]:
        batch_id = new_id()
        for i, a in enumerate(batch[:-1], 1):
            headers = {**_headers(a), "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i)}
            try:
                await self.nc.publish(a.subject, a.data, headers=_sendable(headers))
            except nats.errors.ConnectionClosedError as e:
                raise LogUnavailable(str(e)) from e
        commit = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(len(batch)), "Nats-Batch-Commit": "1"}
        return await self._publish(batch[-1], commit)

    async def _publish(self, a: Append, extra: dict[str, str] | None = None) -> asyncio.Future[int]:
        if not self._inbox:
            self._inbox = f"{self.nc.new_inbox()}."
            await self.nc.subscribe(f"{self._inbox}*", cb=self._on_ack)
        headers = _headers(a) if extra is None else {**_headers(a), **extra}
        if self._window.locked():  # only a full window waits: a deadline per entry would cost a timer each
            try:
                async with asyncio.timeout(self.ack_timeout):
                    await self._window.acquire()
            except TimeoutError as e:
                raise LogUnavailable(f"{len(self._acks)} appends waiting for acknowledgement") from e
        else:
            await self._window.acquire()
        self._next += 1
        reply = f"{self._inbox}{self._next}"
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda _: self._release(reply))
        self._acks[reply] = future
        try:
            await self.nc.publish(a.subject, a.data, reply=reply, headers=_sendable(headers))
        except nats.errors.ConnectionClosedError as e:
            self._acks.pop(reply, None)
            future.cancel()
            raise LogUnavailable(str(e)) from e
        return future

    def _release(self, reply: str) -> None:
        self._acks.pop(reply, None)
        self._window.release()

    async def _settle(self, a: Append, future: asyncio.Future[int]) -> AppendResult:
        """Wait for the ack; on a time-out re-send the same entry (same Msg-Id, so never twice)."""
        retried = False
        for attempt in range(self.tries):
            try:
                async with asyncio.timeout(self.ack_timeout):
                    return await future
            except _Refused as e:
                if e.code not in WRONG_LAST:
                    raise LogUnavailable(f"append to {a.subject} refused: {e.description}") from e
                last = await self._conflict_seq(e, a.expect_subject or a.subject)
                if retried and await self._is_mine(last, a.msg_id):
                    return last
                return Conflict(a.subject, last)
            except (TimeoutError, nats.js.errors.NoStreamResponseError):
                if attempt + 1 == self.tries:
                    break
                retried = True
                await asyncio.sleep(min(0.1 * 2**attempt, 1.0))
                future = await self._publish(a)
        raise LogUnavailable(f"no acknowledgement for {a.subject} after {self.tries} tries")

    async def _conflict_seq(self, e: _Refused, filter_subject: str | None) -> int:
        """The last sequence the refusal names, else the one on the filter (the stream's for a batch)."""
        if e.code == WRONG_LAST_SEQUENCE:
            return last_seq_from(e.description)
        return await self.last_seq(filter_subject)

    async def _is_mine(self, seq: int, msg_id: str) -> bool:
        """After a retry a conflict may be our own first attempt, stored before the time-out."""
        entry = await self.get(seq)
        return entry is not None and (entry.headers or {}).get("Nats-Msg-Id") == msg_id

    async def last_seq(self, filter_subject: str | None = None) -> int:
        try:
            if filter_subject is None:
                info = await self.js.stream_info(self.stream)
                return int(info.state.last_seq)
            msg = await self.js.get_last_msg(self.stream, filter_subject)
        except nats.js.errors.NotFoundError:
            return 0
        except (nats.errors.Error, TimeoutError) as e:  # no quorum, no server: the caller retries later
            raise LogUnavailable(f"last sequence unknown: {e!r}") from e
        return int(msg.seq or 0)

    async def follow(self, filter_subject: Filter, start_seq: int, on_entry: OnEntry) -> Following:
        async def deliver(msg: Msg) -> None:
            seq, pending = _parse_reply(msg.reply)
            result = on_entry(Entry(seq=seq, subject=msg.subject, data=msg.data, headers=msg.headers,
                                    pending=pending))
            if result is not None:
                await result

        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(start_seq, 1),
            filter_subjects=None if isinstance(filter_subject, str) else list(filter_subject),
        )
        subject = filter_subject if isinstance(filter_subject, str) else ""  # several: `filter_subjects`
        sub = await self.js.subscribe(
            subject, cb=deliver, ordered_consumer=True, config=config, stream=self.stream
        )
        return _Following(sub)

    async def get(self, seq: int) -> Entry | None:
        try:
            msg = await self.js.get_msg(self.stream, seq)
        except nats.js.errors.NotFoundError:
            return None
        return Entry(seq=seq, subject=msg.subject or "", data=msg.data or b"", headers=msg.headers, pending=0)


class _Clean(str):
    """A header value that is already what nats-py sends (no surrounding blanks, no CR or LF).
    nats-py cleans every value with `value.strip().translate(table)`, and `str.translate` with a
    table costs ~6 us for a 50-character value: with 5-7 headers per entry that was a quarter of the
    orchestrator's CPU (py-spy, `benchmarks/schedule.py`). On this type both return it unchanged;
    should nats-py clean values another way, it is still an ordinary `str`."""

    __slots__ = ()

    def strip(self, chars: str | None = None) -> str:
        return self if chars is None else str.strip(self, chars)

    def translate(self, table: Any) -> str:
        return self


def _sendable(headers: dict[str, str]) -> dict[str, str]:
    """Values that need no cleaning marked so; any other is left for nats-py to clean."""
    return {k: _Clean(v) if "\r" not in v and "\n" not in v and v == v.strip() else v for k, v in headers.items()}


def _headers(a: Append) -> dict[str, str]:
    headers = {"Nats-Msg-Id": a.msg_id, **(a.headers or {})}
    if a.expect_seq is not None:
        headers["Nats-Expected-Last-Subject-Sequence"] = str(a.expect_seq)
        if a.expect_subject:
            headers["Nats-Expected-Last-Subject-Sequence-Subject"] = a.expect_subject
    return headers


def last_seq_from(description: str | None) -> int:
    """The server says `wrong last sequence: N`; N is the entity's current last sequence."""
    try:
        return int((description or "").rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return -1


async def connect(servers: list[str], name: str) -> Client:
    """Connect with unbounded reconnects: a manager process outlives any one NATS server."""

    async def on_error(e: Exception) -> None:
        log.warning("nats error: %r", e)

    nc = ShoalClient()
    await nc.connect(  # nats-py annotates the wait as int, and sleeps for it: half a second is meant
        servers=servers, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,  # type: ignore[arg-type]
        error_cb=on_error)
    return nc
