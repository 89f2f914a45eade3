"""Task logs on request: the messages between the api and an agent on core NATS.

Logs never enter the event log (they are not facts about the cluster, and they are large). The api
asks the agent that runs a task with a control message on `shoal.logs.<node id>`; the agent answers
every control message with a `LogReply` and sends the lines as numbered `LogChunk`s to the stream's
inbox, then a chunk with `End` set. Core NATS is at-most-once, so chunks carry a sequence number and
the api says how many it has consumed (`LogRenew.Received`): the agent never runs more than `Window`
chunks ahead, which is both flow control and the proof that someone still listens. A stream whose
api falls silent for the agent's lease is ended by the agent, so an abandoned `follow` never leaks.

Encoded with MessagePack, unlike the JSON log: the payload is raw bytes, which JSON would inflate.
"""

from __future__ import annotations

import msgspec

from schemas.base import Fact

STDOUT = 1
STDERR = 2
"""Stream numbers, as in Docker's stdcopy framing."""

RENEW_S = 2.0
"""The api renews each open stream at least this often, even when no chunk arrives."""
LEASE_S = 10.0
"""An agent ends a stream whose api has been silent this long (several renewals missed)."""


class LogQuery(Fact, frozen=True):
    """What to read from one task's container: Docker's `follow`, `tail`, `since`, `until`, streams."""

    follow: bool = False
    tail: int = -1
    """Last N lines (of stdout and stderr together); -1 = all."""
    since: int = 0
    """Unix time in ns; 0 = from the beginning."""
    until: int = 0
    """Unix time in ns; 0 = no end."""
    stdout: bool = True
    stderr: bool = True


class LogLine(Fact, frozen=True, array_like=True):
    """One line (with its newline, when it had one) of one stream, and when it was written."""

    stream: int
    time: int
    """Unix time in ns."""
    data: bytes


class LogOpen(Fact, frozen=True, tag=True):
    """Start streaming a task's logs to `Inbox`; the inbox also names the stream in later messages."""

    inbox: str
    task_id: str
    query: LogQuery = LogQuery()
    window: int = 32
    """Chunks the agent may send beyond the last `Received` count."""


class LogRenew(Fact, frozen=True, tag=True):
    """The api still listens and has consumed `Received` chunks: extends the lease, opens the window."""

    inbox: str
    received: int = 0


class LogCancel(Fact, frozen=True, tag=True):
    """The api's client went away: stop at once."""

    inbox: str


LogControl = LogOpen | LogRenew | LogCancel

LogBatch = list[LogLine]
"""Lines an executor hands over at once; each becomes one chunk."""


class LogReply(Fact, frozen=True):
    """The agent's answer to every control message; `Error` says why it refused."""

    error: str = ""


class LogChunk(Fact, frozen=True):
    seq: int
    """1, 2, 3 ... per stream: a gap means chunks were lost."""
    lines: LogBatch = msgspec.field(default_factory=list)
    end: bool = False
    error: str = ""
    """With `End`: why the stream stopped early (the container is gone, the engine failed ...)."""


_encoder = msgspec.msgpack.Encoder()
_control: msgspec.msgpack.Decoder[LogControl] = msgspec.msgpack.Decoder(LogControl)
_reply = msgspec.msgpack.Decoder(LogReply)
_chunk = msgspec.msgpack.Decoder(LogChunk)


def encode(message: LogOpen | LogRenew | LogCancel | LogReply | LogChunk) -> bytes:
    return _encoder.encode(message)


def decode_control(data: bytes) -> LogControl:
    """Raises `msgspec.DecodeError` (or `ValidationError`) for anything else."""
    return _control.decode(data)


def decode_reply(data: bytes) -> LogReply:
    return _reply.decode(data)


def decode_chunk(data: bytes) -> LogChunk:
    return _chunk.decode(data)
