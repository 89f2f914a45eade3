"""Daemon-level endpoints: ping, version, info, swarm, and image digest resolution."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.api import commands, swarm_spec
from services.api.committer import Committer
from services.api.context import api_of
from services.api.errors import NotFound, Unavailable
from services.api.routes import Route
from services.api.system import info_view, swarm_view, version_view
from services.api.tokens import new_token
from services.api.views import self_node_id
from services.api.wire import bool_param, empty_response, json_response, read_json, version_param
from services.kernel.state import Cluster, ClusterState
from services.kernel.writer import Intent

PING_HEADERS = {
    "Swarm": "active/manager",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
}
ALREADY_IN_SWARM = (
    'This node is already part of a swarm. Use "docker swarm leave" to leave this swarm and join another one.'
)


async def ping(request: web.Request) -> web.Response:
    """Every CLI command starts here; `Api-Version` (added to every response) drives negotiation."""
    return web.Response(text="OK", headers=PING_HEADERS)


async def version(request: web.Request) -> web.Response:
    return json_response(version_view())


async def info(request: web.Request) -> web.Response:
    api = api_of(request)
    return json_response(info_view(api.state, self_node_id(api.state, api.node_id)))


async def inspect_swarm(request: web.Request) -> web.Response:
    return json_response(swarm_view(_cluster(request), tokens=True))


async def init_or_join(request: web.Request) -> web.Response:
    """The gateway is always part of its cluster: Shoal clusters are made by `shoal up`."""
    raise Unavailable(ALREADY_IN_SWARM)


async def update_swarm(request: web.Request) -> web.Response:
    """Token rotation (`docker swarm join-token --rotate`) and the task history limit
    (`docker swarm update --task-history-limit`); the rest of the swarm spec is fixed in Shoal."""
    body = await read_json(request, dict[str, Any])
    version = version_param(request, "swarm")
    cluster = _cluster(request)
    committer = api_of(request).committer
    if swarm_spec.requested(cluster.spec, body) is not None:  # a bad body is refused before any write
        version = await committer.commit(lambda state: _update_spec(state, version, body))
    for role in ("worker", "manager"):
        if bool_param(request, f"rotate{role.title()}Token"):
            version = await _rotate(committer, version, role, new_token(cluster.id))
    return empty_response()


def _update_spec(state: ClusterState, version: int, body: dict[str, Any]) -> Intent | None:
    """The new spec from the state the write is decided on, so a setting recorded since the request
    arrived (the orchestrator's heartbeat period) is kept, not overwritten with an older copy."""
    spec = swarm_spec.requested(state.cluster.spec if state.cluster is not None else None, body)
    return None if spec is None else commands.update_cluster_spec(state, version, spec)


async def _rotate(committer: Committer, version: int, role: str, token: str) -> int:
    """Rotating both tokens is two entries; the second expects the first as the cluster's version."""
    return await committer.commit(lambda state: commands.rotate_token(state, version, role, token))


async def distribution(request: web.Request) -> web.Response:
    """Shoal does not resolve digests; any error makes the CLI keep the image exactly as typed."""
    raise NotFound(f"shoal does not resolve image digests: {request.match_info['name']} is used as given")


def _cluster(request: web.Request) -> Cluster:
    cluster = api_of(request).state.cluster
    if cluster is None:
        raise Unavailable("This node is not part of a swarm")
    return cluster


ROUTES: list[Route] = [
    Route("GET", "/_ping", ping, "Liveness and API version negotiation (headers)", returns=str,
          content_type="text/plain"),
    Route("GET", "/version", version, "Server version", returns=dict[str, Any]),
    Route("GET", "/info", info, "System information, with the Swarm section", returns=dict[str, Any]),
    Route("GET", "/swarm", inspect_swarm, "The swarm, with join tokens", returns=dict[str, Any]),
    Route("POST", "/swarm/init", init_or_join, "Refused: the gateway is always part of its cluster",
          body=dict[str, Any], errors=(503,)),
    Route("POST", "/swarm/join", init_or_join, "Refused: the gateway is always part of its cluster",
          body=dict[str, Any], errors=(503,)),
    Route("POST", "/swarm/update", update_swarm, "Rotate join tokens, set the task history limit",
          query=("version", "rotateWorkerToken", "rotateManagerToken"), body=dict[str, Any]),
    Route("GET", "/distribution/{name:.+}/json", distribution, "Image digests are not resolved", errors=(404,)),
]
