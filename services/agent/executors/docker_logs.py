"""A container's logs from the Docker engine, as the agent's log protocol wants them.

The engine is asked for timestamps always (the api needs them for `since` and `--timestamps`) and
answers one line per stdcopy frame, stdout and stderr apart; a TTY container's stream is raw and all
of it is stdout, as Docker reports it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

import aiodocker
from aiodocker.exceptions import DockerError

from schemas.logs import STDOUT, LogBatch, LogLine, LogQuery
from services.agent.executor import ExecutorError
from services.kernel import stdcopy
from services.kernel.ids import parse_ns


def _unix(ns: int) -> str:
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def params(query: LogQuery) -> dict[str, str]:
    """The engine's `/containers/{id}/logs` query for a log query."""
    out = {"stdout": str(int(query.stdout)), "stderr": str(int(query.stderr)), "follow": str(int(query.follow)),
           "timestamps": "1", "tail": "all" if query.tail < 0 else str(query.tail)}
    if query.since:
        out["since"] = _unix(query.since)
    if query.until:
        out["until"] = _unix(query.until)
    return out


def parse_line(stream: int, payload: bytes) -> LogLine:
    """`<RFC 3339 nano> <line>` as the engine sends it with `timestamps=1`."""
    stamp, _, data = payload.partition(b" ")
    try:
        at = parse_ns(stamp.decode())
    except (ValueError, UnicodeDecodeError):
        at, data = time.time_ns(), payload
    return LogLine(stream=stream, time=at, data=data)


def _tty_lines(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """A TTY container's raw stream cut into lines, all of it stdout."""
    *complete, rest = data.split(b"\n")
    return [(STDOUT, line + b"\n") for line in complete], rest


async def container_logs(docker: aiodocker.Docker, cid: str, query: LogQuery) -> AsyncGenerator[LogBatch, None]:
    try:
        tty = bool((await docker.containers.container(cid).show())["Config"].get("Tty"))
        # aiodocker's own `log()` merges stdout and stderr; its query helper keeps the frames.
        async with docker._query(f"containers/{cid}/logs", params=params(query),
                                 timeout=docker._resolve_long_running_timeout(None)) as response:
            content = response.content
            rest = b""
            # Each read takes what the engine has sent so far: history arrives in big batches, a
            # followed line at once.
            while data := await content.readany():
                frames, rest = _tty_lines(rest + data) if tty else stdcopy.split(rest + data)
                if frames:
                    yield [parse_line(stream, payload) for stream, payload in frames]
            if tty and rest:
                yield [parse_line(STDOUT, rest)]
    except DockerError as e:
        raise ExecutorError(f"task: cannot read the container's logs: {e.message}") from e
