"""`/tasks`: list with filters (the CLI's `service ps`, `node ps` and progress display) and inspect."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiohttp import web

from schemas.task import Task
from services.api import filters
from services.api.context import api_of
from services.api.log_stream import LOG_PARAMS, stream_logs
from services.api.lookup import find_node, find_service, find_task
from services.api.routes import Route
from services.api.views import task_view
from services.api.wire import json_response
from services.kernel.state import ClusterState


async def list_tasks(request: web.Request) -> web.Response:
    state = api_of(request).state
    wanted = filters.parse(request.query.get("filters"), filters.TASK_KEYS)
    filters.check_task_filters(wanted)
    _resolve(wanted, "service", lambda ref: find_service(state, ref).id)
    _resolve(wanted, "node", lambda ref: find_node(state, ref).id)
    return json_response([
        task_view(task)
        for task in _candidates(state, wanted)
        if filters.task_matches(task, wanted, state.services.get(task.service_id), state.nodes.get(task.node_id))
    ])


def _resolve(wanted: filters.Filters, key: str, to_id: Callable[[str], str]) -> None:
    """Like dockerd, `service` and `node` filters take names and prefixes; an unknown one is a 404."""
    if key in wanted:
        wanted[key] = {to_id(ref) for ref in wanted[key]}


def _candidates(state: ClusterState, wanted: filters.Filters) -> Iterable[Task]:
    """Start from an index when a filter allows it: the progress display polls every 200 ms."""
    if "service" in wanted:
        return [t for service_id in wanted["service"] for t in state.tasks_of_service(service_id)]
    if "node" in wanted:
        return [t for node_id in wanted["node"] for t in state.tasks_on_node(node_id)]
    return state.tasks.values()


async def inspect_task(request: web.Request) -> web.Response:
    return json_response(task_view(find_task(api_of(request).state, request.match_info["id"])))


async def task_logs(request: web.Request) -> web.StreamResponse:
    return await stream_logs(request, [find_task(api_of(request).state, request.match_info["id"])])


ROUTES: list[Route] = [
    Route("GET", "/tasks", list_tasks, "List tasks", query=("filters",), returns=list[Task], errors=(404,)),
    Route("GET", "/tasks/{id}", inspect_task, "Inspect a task by id or unique id prefix", returns=Task,
          errors=(404,)),
    Route("GET", "/tasks/{id}/logs", task_logs, "The task's logs, as Docker multiplexes them", query=LOG_PARAMS,
          errors=(404, 501)),
]
