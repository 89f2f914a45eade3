"""Which executor `shoal up` gives its agents when none is named: docker where an engine answers.

The engine is `--engine`, else `SHOAL_DOCKER_HOST`, else the system socket. `DOCKER_HOST` is never
read: operators point it at Shoal's own API, and an agent running containers on Shoal would loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import aiodocker
from aiodocker.exceptions import DockerError

from services.cli.plan import Options
from services.kernel.config import env

SYSTEM_ENGINE = "unix:///var/run/docker.sock"
PROBE_TIMEOUT_S = 3.0


def default_engine() -> str:
    return env("SHOAL_DOCKER_HOST", SYSTEM_ENGINE)


async def answers(engine: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Does a Docker engine answer `GET /version` at this address?"""
    try:
        docker = aiodocker.Docker(url=engine)
    except (ValueError, OSError):
        return False
    try:
        async with asyncio.timeout(timeout_s):
            await docker.version()
        return True
    except (OSError, DockerError, TimeoutError, ValueError):
        return False
    finally:
        with contextlib.suppress(OSError):
            await docker.close()


async def choose(options: Options) -> tuple[Options, str]:
    """The options with an executor, and a line saying which and why (printed by `shoal up`)."""
    if options.executor:
        where = f" on {options.engine}" if options.executor == "docker" else ""
        return options, f"executor {options.executor}{where} (as asked)"
    if await answers(options.engine):
        return replace(options, executor="docker"), f"executor docker: the engine at {options.engine} answers"
    return (replace(options, executor="process"),
            f"executor process: no Docker engine answers at {options.engine} (--engine or SHOAL_DOCKER_HOST)")
