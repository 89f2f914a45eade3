"""What every handler needs: the projection it reads and the committer it writes through."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from services.api.checkpoints import Checkpoints
from services.api.committer import Committer
from services.api.log_fetcher import LogFetcher
from services.kernel.projection import Projection
from services.kernel.state import ClusterState


@dataclass
class Api:
    projection: Projection
    committer: Committer
    node_id: str = ""
    """The node this gateway speaks for (`--node-id`); empty = pick one from the cluster."""
    logs: LogFetcher | None = None
    """Reads task logs from the agents over NATS; None where there is no NATS (in-memory tests)."""
    checkpoints: Checkpoints | None = None
    """For `/shoal/state?at=`; made on first use from the projection's log and snapshot store."""

    @property
    def state(self) -> ClusterState:
        return self.projection.state


API = web.AppKey("api", Api)


def api_of(request: web.Request) -> Api:
    return request.app[API]
