"""`/nodes`: list, inspect (by id, hostname or prefix), update (availability, role, labels), remove."""

from __future__ import annotations

from aiohttp import web

from schemas.node import Node, NodeSpec
from services.api import commands, filters
from services.api.context import api_of
from services.api.lookup import find_node
from services.api.routes import Route
from services.api.validation import validate_node_spec
from services.api.views import node_view, self_node_id
from services.api.wire import bool_param, empty_response, json_response, read_json, version_param


async def list_nodes(request: web.Request) -> web.Response:
    api = api_of(request)
    wanted = filters.parse(request.query.get("filters"), filters.NODE_KEYS)
    filters.check_node_filters(wanted)
    self_id = self_node_id(api.state, api.node_id)
    return json_response([
        node_view(node, self_id) for node in api.state.nodes.values() if filters.node_matches(node, wanted)
    ])


async def inspect_node(request: web.Request) -> web.Response:
    api = api_of(request)
    node = find_node(api.state, request.match_info["id"])
    return json_response(node_view(node, self_node_id(api.state, api.node_id)))


async def update_node(request: web.Request) -> web.Response:
    spec = await read_json(request, NodeSpec)
    version = version_param(request, "node")
    validate_node_spec(spec)
    ref = request.match_info["id"]
    await api_of(request).committer.commit(lambda state: commands.update_node(state, ref, version, spec))
    return empty_response()


async def remove_node(request: web.Request) -> web.Response:
    ref = request.match_info["id"]
    force = bool_param(request, "force")
    await api_of(request).committer.commit(lambda state: commands.remove_node(state, ref, force))
    return empty_response()


ROUTES: list[Route] = [
    Route("GET", "/nodes", list_nodes, "List nodes", query=("filters",), returns=list[Node]),
    Route("GET", "/nodes/{id}", inspect_node, "Inspect a node by id, hostname or unique id prefix", returns=Node,
          errors=(404,)),
    Route("POST", "/nodes/{id}/update", update_node, "Replace a node's spec (availability, role, labels, name)",
          query=("version",), body=NodeSpec, errors=(404,)),
    Route("DELETE", "/nodes/{id}", remove_node, "Remove a node", query=("force",), errors=(404,)),
]
