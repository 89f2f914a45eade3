"""The web view's routes: the page and its files, nothing else from disk, and the log as server-sent events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import make_app
from services.api.bootstrap import build
from services.kernel.memlog import MemoryLog


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    api = await build(MemoryLog())
    async with TestClient(TestServer(make_app(api))) as c:
        yield c
    await api.projection.stop()


async def test_the_page_and_its_script_are_served(client: TestClient[Any, Any]) -> None:
    page = await client.get("/shoal/ui")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "/shoal/ui/ui.js" in await page.text()
    script = await client.get("/shoal/ui/ui.js")
    assert script.status == 200 and script.headers["Content-Type"].startswith("text/javascript")


@pytest.mark.parametrize("name", ["routes_ui.py", "..%2Fapp.py", "missing.js", "index"])
async def test_nothing_else_is_served_from_disk(client: TestClient[Any, Any], name: str) -> None:
    assert (await client.get(f"/shoal/ui/{name}")).status == 404


async def test_the_log_arrives_as_server_sent_events(client: TestClient[Any, Any]) -> None:
    response = await client.get("/shoal/ui/events", params={"since": "0"})
    assert response.headers["Content-Type"] == "text/event-stream"
    hello = await response.content.readuntil(b"\n\n")
    assert hello == b"event: hello\ndata: 1\n\n"  # the log holds ClusterCreated
    first = (await response.content.readuntil(b"\n\n")).decode().splitlines()
    assert first[0] == "id: 1"
    data = json.loads(first[1].removeprefix("data: "))
    assert data["Seq"] == 1 and data["Type"] == "ClusterCreated" and data["Actor"] == "api:anonymous"
    response.close()
