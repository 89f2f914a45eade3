"""`/shoal/tasks/{id}/explain`: why a task waits, or why it went where it did (see `explain`)."""

from __future__ import annotations

import time

from aiohttp import web

from services.api.context import api_of
from services.api.explain import Explanation, explain
from services.api.lookup import find_task
from services.api.routes import Route
from services.api.wire import json_response


async def explain_task(request: web.Request) -> web.Response:
    state = api_of(request).state
    task = find_task(state, request.match_info["id"])
    return json_response(explain(state, task, time.time_ns()))


ROUTES: list[Route] = [
    Route("GET", "/shoal/tasks/{id}/explain", explain_task,
          "Every node with the filter that rejects the task, or its rank and score (id or unique id prefix)",
          returns=Explanation, errors=(404,)),
]
