"""Assembling a gateway over an event log, and serving it.

Kept apart from `__main__` so tests build the same gateway over the in-memory log.
"""

from __future__ import annotations

from services.api import commands
from services.api.committer import Committer
from services.api.context import Api
from services.api.tokens import new_token
from services.kernel.eventlog import EventLog
from services.kernel.ids import new_id
from services.kernel.projection import Projection
from services.kernel.snapshot import SnapshotStore
from services.kernel.writer import Writer

ACTOR = "api:anonymous"
"""The actor on every event the gateway appends; there is no authentication yet to name a principal."""


async def build(eventlog: EventLog, snapshots: SnapshotStore | None = None, node_id: str = "") -> Api:
    """A gateway whose projection has caught up with the log and whose cluster exists."""
    projection = Projection(eventlog, snapshots=snapshots, snapshot_name="api")
    await projection.start()
    api = Api(projection, Committer(projection, Writer(eventlog, actor=ACTOR)), node_id=node_id)
    await ensure_cluster(api)
    return api


async def ensure_cluster(api: Api) -> None:
    """The first gateway to start creates the cluster; concurrent ones lose the CAS and see its event."""
    cluster_id = new_id()
    worker, manager = new_token(cluster_id), new_token(cluster_id)
    await api.committer.commit(lambda state: commands.create_cluster(state, cluster_id, worker, manager))

