"""Snapshots of a projection, so start-up time depends on the cluster's size, not the log's age.

A snapshot holds the objects and the sequence they cover; indexes are rebuilt on load. Start-up
is then: newest snapshot + the tail of the log after its sequence.
"""

from __future__ import annotations

import contextlib
import io
import logging
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
    tasks: list[Task]
    last_service_spec_seq: int
    leaders: list[Leader] = []


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Snapshot)


def take(state: ClusterState) -> bytes:
    return _encoder.encode(
        Snapshot(
            seq=state.seq,
            cluster=state.cluster,
            services=list(state.services.values()),
            nodes=list(state.nodes.values()),
            tasks=list(state.tasks.values()),
            last_service_spec_seq=state.last_service_spec_seq,
            leaders=list(state.leaders.values()),
        )
    )


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
