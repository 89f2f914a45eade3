"""Run the real docker CLI against Shoal's API, the way an operator does."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp


def docker_binary() -> str:
    found = shutil.which("docker")
    if found is None:
        raise AssertionError("the docker CLI is missing: `apt-get install docker.io` (make test installs it)")
    return found


async def docker(host: str, *args: str, check: bool = True) -> str:
    """`docker <args>` with DOCKER_HOST pointed at Shoal; stdout, or an AssertionError with stderr."""
    proc = await asyncio.create_subprocess_exec(
        docker_binary(), *args, env={**os.environ, "DOCKER_HOST": host},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {proc.returncode}: {err.decode()}")
    return out.decode()


async def api_get(base: str, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(f"{base}{path}") as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30,
                     what: str | Callable[[], str] = "") -> None:
    """Poll until `check` holds; fail with `what` once the deadline passes (not a timing assertion).
    A callable `what` is called then, so logs it quotes are the logs at the failure."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {timeout_s}s: {what() if callable(what) else what}")
        await asyncio.sleep(0.2)


def filters(**kv: str) -> str:
    return json.dumps({k.replace("_", "-"): {v: True} for k, v in kv.items()})


async def service_tasks(api_url: str, service: str) -> list[dict[str, Any]]:
    """`GET /tasks` filtered on one service (name or id), as `docker service ps` asks."""
    tasks: list[dict[str, Any]] = await api_get(api_url, f"/tasks?filters={quote(filters(service=service))}")
    return tasks


async def running_tasks(api_url: str, service: str) -> list[dict[str, Any]]:
    """The service's tasks that run and are meant to."""
    return [t for t in await service_tasks(api_url, service)
            if t["Status"]["State"] == "running" and t["DesiredState"] == "running"]
