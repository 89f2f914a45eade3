"""How the `shoal` client commands reach the api: its address (`--api`, env `SHOAL_API`) and the
HTTP calls, with every failure turned into one line the user can act on, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from services.kernel.config import env

DEFAULT_API = "127.0.0.1:2375"
_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_read=None)


class ClientError(Exception):
    """What went wrong, in words for the user; the command exits 1."""


def add_api_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", default=env("SHOAL_API", DEFAULT_API),
                        help="the Shoal API, host:port or a URL (env SHOAL_API, default %(default)s)")


def base_url(addr: str) -> str:
    """`host:port`, `tcp://host:port` (as in DOCKER_HOST) or an http(s) URL."""
    addr = addr.strip().rstrip("/")
    if addr.startswith(("http://", "https://")):
        return addr
    return "http://" + addr.removeprefix("tcp://")


@asynccontextmanager
async def response(api: str, path: str, params: Mapping[str, str] | None = None) -> AsyncIterator[
        aiohttp.ClientResponse]:
    """A successful (200) response from the api, or `ClientError` with the api's own message."""
    url = base_url(api) + path
    try:
        async with aiohttp.ClientSession(timeout=_TIMEOUT) as session, session.get(url, params=params) as resp:
            if resp.status != 200:
                raise ClientError(await _error_message(resp))
            yield resp
    except aiohttp.InvalidURL:
        raise ClientError(f"not an API address: {api!r} (expected host:port, e.g. {DEFAULT_API})") from None
    except (TimeoutError, aiohttp.ClientConnectionError, OSError) as e:
        raise ClientError(f"cannot reach the Shoal API at {base_url(api)} ({e or type(e).__name__}); "
                          "is the cluster up? Point --api or SHOAL_API at it") from None


async def _error_message(resp: aiohttp.ClientResponse) -> str:
    body = await resp.read()
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    if isinstance(message, str):
        return f"Error response from the Shoal API: {message}"
    return (f"{resp.url} answered {resp.status} {resp.reason} without Docker's error shape: "
            "is --api pointing at a Shoal API?")


async def get_json(api: str, path: str, params: Mapping[str, str] | None = None) -> Any:
    async with response(api, path, params) as resp:
        body = await resp.read()
    try:
        return json.loads(body)
    except ValueError:
        raise ClientError(f"{base_url(api)}{path} did not answer JSON: is --api pointing at a Shoal API?") from None


async def json_lines(api: str, path: str, params: Mapping[str, str] | None = None) -> AsyncIterator[Any]:
    """One decoded object per line of a streamed answer, as they arrive."""
    async with response(api, path, params) as resp:
        async for line in resp.content:
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    raise ClientError(f"{base_url(api)}{path} sent a line that is not JSON: {line[:80]!r}") from None


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a command; a `ClientError` is printed as `shoal: <message>` with exit code 1, Ctrl-C exits 130."""
    try:
        asyncio.run(main)
    except ClientError as e:
        print(f"shoal: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `shoal events | head`: stop quietly, as Python's docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
