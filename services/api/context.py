"""What every handler needs: the projection it reads and the committer it writes through."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

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
    spec_writes: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Service creates and updates through this gateway, one at a time. Names and published ports are
    compare-and-set against every service's spec, so concurrent ones refused each other and retried
    (eight creates in flight: ~450 conflicts and 503s per 1,000 creates), where in turn each waits
    only for the one before it. Gateways still race each other, as the compare-and-set decides."""

    @property
    def state(self) -> ClusterState:
        return self.projection.state


API = web.AppKey("api", Api)


def api_of(request: web.Request) -> Api:
    return request.app[API]
