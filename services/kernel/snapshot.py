"""Snapshots of a projection, so start-up time depends on the cluster's size, not the log's age.

A snapshot holds the objects and the sequence they cover; indexes are rebuilt on load. Start-up
is then: newest snapshot + the tail of the log after its sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import logging
from dataclasses import dataclass
from typing import Protocol

import msgspec
import nats.js.errors
from nats.js.client import JetStreamContext

from schemas.node import Node
from schemas.service import Service
from schemas.task import Task
from services.kernel.state import Cluster, ClusterState, Leader

log = logging.getLogger(__name__)


def bucket(stream: str) -> str:
    """The object store of a stream's snapshots, `SHOAL_SNAPSHOTS` for the default stream: one per
    stream, because a snapshot's sequence means something only in the log it was taken from (a
    cluster started on a new stream must not resume from another stream's sequence 120,000)."""
    return f"{stream}_SNAPSHOTS"


class Snapshot(msgspec.Struct):
    seq: int
    cluster: Cluster | None
    services: list[Service]
    nodes: list[Node]
    last_service_spec_seq: int
    leaders: list[Leader] = []
    tasks: list[Task] = []
    """Last, so `encode_in_steps` can write the tasks after everything else (fields are decoded by
    name: snapshots written in the earlier order load the same)."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Snapshot)
_NO_TASKS = b"\xa5tasks\x90"
"""How an encoded `Snapshot` with no tasks ends: the key `tasks` and an empty array."""
STEP_TASKS = 2000
"""Tasks encoded per step of `encode_in_steps`: a few milliseconds of the event loop."""


def _without_tasks(state: ClusterState) -> Snapshot:
    return Snapshot(
        seq=state.seq,
        cluster=state.cluster,
        services=list(state.services.values()),
        nodes=list(state.nodes.values()),
        last_service_spec_seq=state.last_service_spec_seq,
        leaders=list(state.leaders.values()),
    )


def take(state: ClusterState) -> bytes:
    snap = _without_tasks(state)
    snap.tasks = list(state.tasks.values())
    return _encoder.encode(snap)


@dataclass(frozen=True, slots=True)
class Frozen:
    """A snapshot fixed at one sequence, for `encode_in_steps` to write while the fold goes on: all
    but the tasks already encoded, and a shallow copy of each task. The fold replaces a task's
    fields rather than changing what they hold (`docs/architecture.md`), so a copy keeps the task
    as it was."""

    seq: int
    head: bytes
    tasks: list[Task]


def freeze(state: ClusterState) -> Frozen:
    """~35 ms at 100,000 tasks, where encoding them all at once held the loop for 0.3-0.7 s."""
    return Frozen(state.seq, _encoder.encode(_without_tasks(state)), [copy.copy(t) for t in state.tasks.values()])


async def encode_in_steps(frozen: Frozen, step: int = STEP_TASKS) -> bytes:
    """The bytes `take` would have returned at `frozen.seq`, encoded `step` tasks at a time with the
    event loop run between steps: the tasks' array is written as its header and then each step's
    elements (an encoded list less its own header)."""
    if not frozen.head.endswith(_NO_TASKS):
        raise ValueError("a snapshot's tasks must be its last field")
    parts = [frozen.head[:-1], _array_header(len(frozen.tasks))]
    for start in range(0, len(frozen.tasks), step):
        some = frozen.tasks[start : start + step]
        parts.append(_encoder.encode(some)[len(_array_header(len(some))) :])
        await asyncio.sleep(0)
    return b"".join(parts)


def _array_header(n: int) -> bytes:
    """msgpack's header for an array of `n` elements, in the shortest form, as msgspec writes it."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def restore(data: bytes) -> ClusterState:
    snap = _decoder.decode(data)
    state = ClusterState()
    state.seq = snap.seq
    state.cluster = snap.cluster
    state.services = {s.id: s for s in snap.services}
    state.service_by_name = {s.spec.name: s.id for s in snap.services}
    state.nodes = {n.id: n for n in snap.nodes}
    for task in snap.tasks:
        state.add_task(task)
    state.last_service_spec_seq = snap.last_service_spec_seq
    state.leaders = {leader.loop: leader for leader in snap.leaders}
    return state


class SnapshotStore(Protocol):
    async def save(self, name: str, data: bytes) -> None: ...

    async def load(self, name: str) -> bytes | None: ...

    async def names(self, prefix: str) -> list[str]: ...

    async def delete(self, name: str) -> None:
        """Absent already is not an error."""


class MemorySnapshots:
    def __init__(self) -> None:
        self.saved: dict[str, bytes] = {}

    async def save(self, name: str, data: bytes) -> None:
        self.saved[name] = data

    async def load(self, name: str) -> bytes | None:
        return self.saved.get(name)

    async def names(self, prefix: str) -> list[str]:
        return [n for n in self.saved if n.startswith(prefix)]

    async def delete(self, name: str) -> None:
        self.saved.pop(name, None)


class ObjectStoreSnapshots:
    """Snapshots in a JetStream object store, one object per projection name (newest wins)."""

    def __init__(self, js: JetStreamContext, stream: str, replicas: int = 1) -> None:
        self.js = js
        self.bucket = bucket(stream)
        self.replicas = replicas
        self._store: object | None = None

    async def _obs(self) -> object:
        if self._store is None:
            try:
                self._store = await self.js.object_store(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                self._store = await self.js.create_object_store(
                    self.bucket, config=nats.js.api.ObjectStoreConfig(bucket=self.bucket, replicas=self.replicas)
                )
        return self._store

    async def save(self, name: str, data: bytes) -> None:
        obs = await self._obs()
        await obs.put(name, data)  # type: ignore[attr-defined]

    async def load(self, name: str) -> bytes | None:
        obs = await self._obs()
        buffer = io.BytesIO()
        try:
            # nats-py joins chunks with `data += chunk` unless given a file: quadratic in the size
            # (0.8 s for 11 MB); writing into a buffer is linear (tens of ms).
            await obs.get(name, writeinto=buffer)  # type: ignore[attr-defined]
        except nats.js.errors.ObjectNotFoundError:
            return None
        return buffer.getvalue()

    async def names(self, prefix: str) -> list[str]:
        obs = await self._obs()
        try:
            infos = await obs.list(ignore_deletes=True)  # type: ignore[attr-defined]
        except nats.js.errors.NotFoundError:  # nats-py's word for an empty store
            return []
        return [i.name for i in infos if i.name.startswith(prefix)]

    async def delete(self, name: str) -> None:
        obs = await self._obs()
        with contextlib.suppress(nats.js.errors.ObjectNotFoundError):
            await obs.delete(name)  # type: ignore[attr-defined]
