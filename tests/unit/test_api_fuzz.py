"""No input, however malformed, makes the gateway answer 500 (beyond Docker's own "out of sequence")
or stop answering. Bodies are generated from the real field names, so they reach deep into validation
with wrong types, wrong shapes and hostile values."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import inspect

from schemas.node import Node, NodeSpec
from schemas.service import Service, ServiceSpec
from schemas.task import Task
from services.api.app import make_app
from services.api.bootstrap import build
from services.api.errors import OutOfSequence
from services.kernel.memlog import MemoryLog
from tests.unit.test_api_app import SPEC


def _field_names() -> list[str]:
    names: set[str] = set()
    pending: list[inspect.Type] = [inspect.type_info(t) for t in (ServiceSpec, NodeSpec, Service, Task, Node)]
    seen: set[type] = set()
    while pending:
        kind = pending.pop()
        if isinstance(kind, inspect.StructType) and kind.cls not in seen:
            seen.add(kind.cls)
            names.update(f.encode_name for f in kind.fields)
            pending.extend(f.type for f in kind.fields)
        elif isinstance(kind, inspect.UnionType):
            pending.extend(kind.types)
        elif isinstance(kind, (inspect.ListType, inspect.DictType)):
            pending.append(kind.item_type if isinstance(kind, inspect.ListType) else kind.value_type)
    return sorted(names)


LEAVES = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
          | st.floats(allow_nan=False) | st.text(max_size=20) | st.sampled_from(["", "web", "busybox", "-1", "vip"]))
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(_field_names()) | st.text(max_size=5), inner, max_size=4),
    max_leaves=25,
)
TEXT = st.text(max_size=30) | st.sampled_from(["true", "1", "previous", "web", "0", "18446744073709551616"])
FILTERS = VALUES.map(json.dumps) | TEXT

REQUESTS = st.one_of(
    st.tuples(st.just("POST"), st.just("/services/create"), st.just({}), VALUES),
    st.tuples(st.just("POST"), st.just("/services/create"), st.just({}),
              VALUES.map(lambda v: {**SPEC, **v} if isinstance(v, dict) else v)),
    st.tuples(st.just("POST"), st.just("/services/web/update"),
              st.fixed_dictionaries({"version": TEXT}, optional={"rollback": TEXT}), VALUES),
    st.tuples(st.just("POST"), st.sampled_from(["/nodes/n/update", "/swarm/update"]),
              st.fixed_dictionaries({"version": TEXT}, optional={"rotateWorkerToken": TEXT}), VALUES),
    st.tuples(st.sampled_from(["GET", "DELETE"]), st.sampled_from(["/services/web", "/nodes/n", "/tasks/t", "/x"]),
              st.fixed_dictionaries({}, optional={"insertDefaults": TEXT, "force": TEXT}), st.none()),
    st.tuples(st.just("GET"), st.sampled_from(["/services", "/tasks", "/nodes", "/shoal/events"]),
              st.fixed_dictionaries({"filters": FILTERS}, optional={"status": TEXT, "since": TEXT}), st.none()),
    st.tuples(st.just("GET"), st.just("/events"),
              st.fixed_dictionaries({"until": st.just("1")}, optional={"since": TEXT, "filters": FILTERS}), st.none()),
    st.tuples(st.just("GET"), st.just("/shoal/state"), st.fixed_dictionaries({"at": TEXT}), st.none()),
)

ALLOWED_500 = OutOfSequence().message


async def _exercise(requests: list[tuple[str, str, dict[str, str], Any]]) -> None:
    api = await build(MemoryLog())
    async with TestClient(TestServer(make_app(api))) as client:
        await client.post("/services/create", json=SPEC)
        for method, path, params, body in requests:
            data = json.dumps(body).encode() if body is not None else None
            response = await client.request(method, f"/v1.41{path}", params=params, data=data)
            payload = await response.read()
            if response.status >= 400:
                assert response.headers["Content-Type"] == "application/json", (method, path, params, body)
                message = json.loads(payload)["message"]
                assert response.status != 500 or message == ALLOWED_500, (method, path, params, body, message)
        assert (await client.get("/_ping")).status == 200
    await api.projection.stop()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(REQUESTS, min_size=1, max_size=8))
def test_no_request_breaks_the_gateway(requests: list[tuple[str, str, dict[str, str], Any]]) -> None:
    asyncio.run(_exercise(requests))
