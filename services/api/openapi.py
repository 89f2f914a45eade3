"""`/shoal/openapi.json`: the OpenAPI 3.1 document of everything this server answers.

Built from the route table and the msgspec types the handlers decode and encode, so it describes
exactly what is served (schema-driven testers such as schemathesis can run against it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from services.api.errors import ErrorBody
from services.api.routes import Route
from services.api.system import VERSION
from services.api.versioning import API_VERSION

COMMON_ERRORS = (400, 500, 503)
_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")
_REF = "#/components/schemas/{name}"


def document(routes: Sequence[Route]) -> dict[str, Any]:
    types = _types(routes)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(openapi_path(route.path), {})[route.method.lower()] = _operation(route, schema_of)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Shoal API", "version": VERSION,
                 "description": f"Docker Engine API {API_VERSION} (swarm subset) plus Shoal's /shoal/ extensions. "
                                "Every path is also served under a /vX.Y prefix."},
        "paths": paths,
        "components": {"schemas": components},
    }


def openapi_path(path: str) -> str:
    """aiohttp's `{name:regex}` placeholders as OpenAPI's `{name}`."""
    return _PARAM.sub(r"{\1}", path)


def _types(routes: Sequence[Route]) -> list[Any]:
    found: list[Any] = [ErrorBody]
    for route in routes:
        for kind in (route.body, route.returns):
            if kind is not None and kind not in found:
                found.append(kind)
    return found


def _operation(route: Route, schema_of: dict[Any, Any]) -> dict[str, Any]:
    error = {"description": "error", "content": {"application/json": {"schema": schema_of[ErrorBody]}}}
    success: dict[str, Any] = {"description": "success"}
    if route.returns is not None:
        success["content"] = {route.content_type: {"schema": schema_of[route.returns]}}
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": "_".join([route.method.lower(), *re.findall(r"\w+", _PARAM.sub(r"\1", route.path))]),
        "parameters": [*_path_parameters(route.path), *_query_parameters(route.query)],
        "responses": {str(route.status): success,
                      **{str(status): error for status in sorted({*COMMON_ERRORS, *route.errors})}},
    }
    if route.body is not None:
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": schema_of[route.body]}}}
    return operation


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(path)]


REQUIRED_QUERY = {"version": {"type": "integer", "minimum": 0}}
"""Query parameters a route cannot do without: `version` is the compare-and-set of every update."""


def _query_parameters(names: Sequence[str]) -> list[dict[str, Any]]:
    return [{"name": name, "in": "query", "required": name in REQUIRED_QUERY,
             "schema": REQUIRED_QUERY.get(name, {"type": "string"})} for name in names]
