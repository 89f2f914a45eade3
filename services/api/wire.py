"""Reading requests and writing responses: bodies, query parameters and JSON encoding.

Bodies are parsed once into plain values, checked for fields the schema does not know (a
misspelt `Replicas` silently ignored would run the wrong number of tasks), then converted to the
typed spec; msgspec's errors already name the offending path, so they become 400s verbatim.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from msgspec import inspect

from services.api.errors import InvalidParameter

T = TypeVar("T")

MAX_BODY = 4 * 1024 * 1024
"""Largest request body accepted; a service spec is a few kilobytes."""

_encoder = msgspec.json.Encoder()
_FALSE = frozenset({"", "0", "no", "false", "none"})


async def read_json(request: web.Request, kind: type[T], upgrade: Callable[[Any], Any] | None = None) -> T:
    """The body as `kind`, or a 400 that says what is wrong and where. `upgrade` rewrites the plain
    value first, for deprecated spellings dockerd still accepts."""
    body = await request.read()
    try:
        raw = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError) as e:
        raise InvalidParameter(f"invalid JSON in request body: {e}") from e
    if upgrade is not None:
        raw = upgrade(raw)
    unknown = next(unknown_fields(raw, _type_info(kind)), None)
    if unknown is not None:
        where, _, key = unknown.rpartition(".")
        raise InvalidParameter(f"invalid request body: Object contains unknown field `{key}` - at `{where}`")
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as e:
        raise InvalidParameter(f"invalid request body: {e}") from e


_TYPE_INFO: dict[Any, inspect.Type] = {}


def _type_info(kind: Any) -> inspect.Type:
    """Once per type: msgspec's inspection walks every annotation (a fifth of the API's CPU per create)."""
    found = _TYPE_INFO.get(kind)
    if found is None:
        found = _TYPE_INFO[kind] = inspect.type_info(kind)
    return found


def unknown_fields(raw: Any, kind: inspect.Type, path: str = "$") -> Iterator[str]:
    """Paths of keys in `raw` that `kind` has no field for. A null value is as good as absent."""
    if isinstance(kind, inspect.UnionType):
        for member in kind.types:
            yield from unknown_fields(raw, member, path)
    elif isinstance(kind, inspect.StructType) and isinstance(raw, dict):
        fields = {f.encode_name: f.type for f in kind.fields}
        for key, value in raw.items():
            if key not in fields:
                if value is not None:
                    yield f"{path}.{key}"
            else:
                yield from unknown_fields(value, fields[key], f"{path}.{key}")
    elif isinstance(kind, (inspect.ListType, inspect.SetType)) and isinstance(raw, list):
        for i, item in enumerate(raw):
            yield from unknown_fields(item, kind.item_type, f"{path}[{i}]")
    elif isinstance(kind, inspect.DictType) and isinstance(raw, dict):
        for key, value in raw.items():
            yield from unknown_fields(value, kind.value_type, f"{path}.{key}")


def json_response(value: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_encoder.encode(value), content_type="application/json")


def empty_response() -> web.Response:
    """200 with no body and no Content-Type, as dockerd answers DELETE and node updates."""
    return web.Response(status=200)


def bool_param(request: web.Request, name: str) -> bool:
    """dockerd's `BoolValue`: anything but empty, 0, no, false or none is true."""
    return request.query.get(name, "").strip().lower() not in _FALSE


def version_param(request: web.Request, kind: str) -> int:
    """The required `?version=` of an update, with dockerd's message when it is not a uint64."""
    raw = request.query.get("version", "")
    if not (raw.isascii() and raw.isdigit()) or int(raw) >= 2**64:
        raise InvalidParameter(f"invalid {kind} version '{raw}': strconv.ParseUint: parsing \"{raw}\": invalid syntax")
    return int(raw)
