"""A registry stand-in on 127.0.0.1 that demands Basic auth and records what it was sent.

The engine talks plain HTTP to registries on 127.0.0.0/8, so this is enough to see which credentials
an engine pull used, without a real registry or network: every manifest is unknown, so the pull
then fails with the registry's `manifest unknown`.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class FakeRegistry:
    port: int = 0
    authorizations: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def saw_basic(self, username: str, password: str) -> bool:
        return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode() in self.authorizations

    async def handle(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        self.authorizations.append(authorization)
        if not authorization:
            return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401,
                                     headers={"WWW-Authenticate": 'Basic realm="shoal-test"'})
        return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]},
                                 status=404)


@contextlib.asynccontextmanager
async def fake_registry() -> AsyncIterator[FakeRegistry]:
    registry = FakeRegistry()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", registry.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    registry.port = runner.addresses[0][1]
    try:
        yield registry
    finally:
        await runner.cleanup()
