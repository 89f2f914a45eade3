"""`/services`: list, create, inspect, update (scale, rollback), remove."""

from __future__ import annotations

import msgspec
from aiohttp import web
from msgspec.structs import replace

from schemas.service import Service, ServiceSpec
from services.api import commands, filters, registry_auth
from services.api.context import api_of
from services.api.log_stream import LOG_PARAMS, stream_logs
from services.api.lookup import find_service
from services.api.names import random_name
from services.api.routes import Route
from services.api.validation import normalize_service_spec, upgrade_service_spec, validate_service_spec
from services.api.versioning import at_least
from services.api.views import service_status, service_view
from services.api.wire import bool_param, empty_response, json_response, read_json, version_param
from services.kernel.ids import new_id
from services.kernel.state import ClusterState
from services.kernel.writer import Intent

STATUS_SINCE = "1.41"
"""dockerd fills `ServiceStatus` only for clients speaking 1.41 or later."""


class Created(msgspec.Struct):
    """dockerd leaves `Warnings` out when there are none."""

    id: str = msgspec.field(name="ID")


class Updated(msgspec.Struct, rename="pascal"):
    warnings: list[str] | None = None


async def list_services(request: web.Request) -> web.Response:
    state = api_of(request).state
    wanted = filters.parse(request.query.get("filters"), filters.SERVICE_KEYS)
    status = bool_param(request, "status") and at_least(request.match_info.get("version"), STATUS_SINCE)
    return json_response([
        service_view(svc, status=service_status(state, svc) if status else None)
        for svc in state.services.values()
        if filters.service_matches(svc, wanted)
    ])


async def create_service(request: web.Request) -> web.Response:
    api = api_of(request)
    spec = await read_json(request, ServiceSpec, upgrade_service_spec)
    if not spec.name:
        spec = replace(spec, name=random_name(api.state.service_by_name))
    validate_service_spec(spec)
    spec = registry_auth.on_create(normalize_service_spec(spec), request.headers.get(registry_auth.HEADER))
    service_id = new_id()
    async with api.spec_writes:
        await api.committer.commit(lambda state: commands.create_service(state, service_id, spec))
    return json_response(Created(id=service_id), status=201)


async def inspect_service(request: web.Request) -> web.Response:
    svc = find_service(api_of(request).state, request.match_info["id"])
    return json_response(service_view(svc, defaults=bool_param(request, "insertDefaults")))


async def update_service(request: web.Request) -> web.Response:
    api = api_of(request)
    spec = await read_json(request, ServiceSpec, upgrade_service_spec)
    version = version_param(request, "service")
    ref = request.match_info["id"]
    rollback = request.query.get("rollback") == "previous"
    header, source = request.headers.get(registry_auth.HEADER), request.query.get("registryAuthFrom")

    def decide(state: ClusterState) -> Intent:
        with_auth = registry_auth.on_update(spec, header, source, find_service(state, ref))
        return commands.update_service(state, ref, version, with_auth, rollback)

    async with api.spec_writes:
        await api.committer.commit(decide)
    return json_response(Updated())


async def remove_service(request: web.Request) -> web.Response:
    ref = request.match_info["id"]
    await api_of(request).committer.commit(lambda state: commands.remove_service(state, ref))
    return empty_response()


async def service_logs(request: web.Request) -> web.StreamResponse:
    state = api_of(request).state
    return await stream_logs(request, state.tasks_of_service(find_service(state, request.match_info["id"]).id))


ROUTES: list[Route] = [
    Route("GET", "/services", list_services, "List services", query=("filters", "status"), returns=list[Service]),
    Route("POST", "/services/create", create_service, "Create a service", body=ServiceSpec, returns=Created,
          status=201, errors=(409,)),
    Route("GET", "/services/{id}", inspect_service, "Inspect a service by id, name or unique id prefix",
          query=("insertDefaults",), returns=Service, errors=(404,)),
    Route("POST", "/services/{id}/update", update_service, "Replace a service's spec, or roll it back",
          query=("version", "rollback", "registryAuthFrom"), body=ServiceSpec, returns=Updated,
          errors=(404, 409, 501)),
    Route("DELETE", "/services/{id}", remove_service, "Remove a service", errors=(404,)),
    Route("GET", "/services/{id}/logs", service_logs, "The logs of every task of the service, merged, as Docker "
          "multiplexes them", query=LOG_PARAMS, errors=(404, 501)),
]
