"""Keep a set of OS processes alive: start them in order, restart any that dies, stop them in tiers.

Each child has one keeper task that alone spawns, waits for and terminates its process, so a stop
can never race a restart. Children run in their own session: a Ctrl-C in the terminal reaches only
the supervisor, which then stops them in a deliberate order instead of all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import signal
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from services.cli.plan import ProcessSpec

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
"""Loaded here, not in the forked child, where loading a library could deadlock on a lock that
another thread held at fork time."""


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 10.0
    """A child that ran this long before dying is restarted after `initial_s` again."""


class NotReady(RuntimeError):
    pass


class _Child:
    def __init__(self, spec: ProcessSpec, log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.attempts = 0
        self.wanted = False
        self.stop_requested = asyncio.Event()
        self.keeper: asyncio.Task[None] | None = None
        self.spawned = asyncio.Condition()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


def _die_with_parent() -> None:
    """If the supervisor itself is killed with -9, its children get SIGTERM instead of lingering
    (a stray nats-server would hold the port and the store lock of the next `shoal up`)."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    def __init__(
        self,
        specs: Iterable[ProcessSpec],
        log_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        backoff: Backoff | None = None,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.log_dir = log_dir
        self.env = {**(env if env is not None else os.environ), "PYTHONUNBUFFERED": "1"}
        self.backoff = backoff or Backoff()
        self.stop_timeout_s = stop_timeout_s
        self._children = {s.name: _Child(s, log_dir / f"{s.name}.log") for s in specs}

    @property
    def specs(self) -> list[ProcessSpec]:
        return [c.spec for c in self._children.values()]

    def pid(self, name: str) -> int | None:
        child = self._children[name]
        return child.proc.pid if child.proc is not None and child.running else None

    def restarts(self, name: str) -> int:
        return self._children[name].restarts

    def log_path(self, name: str) -> Path:
        return self._children[name].log_path

    async def start(self, ready_timeout_s: float = 30.0) -> None:
        """Start every child in order; a child with a ready port must answer before the next starts."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for child in self._children.values():
            self._launch(child)
            await self._first_attempt(child)
            if child.spec.ready_port is not None:
                await self._wait_ready(child, child.spec.ready_port, ready_timeout_s)

    async def stop(self) -> None:
        """Stop tier by tier (lowest first), all children of a tier at once: SIGTERM, then SIGKILL."""
        for _, tier in itertools.groupby(sorted(self._children.values(), key=lambda c: c.spec.stop_tier),
                                         key=lambda c: c.spec.stop_tier):
            await asyncio.gather(*(self._halt(c) for c in tier))

    async def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Signal a child as a crash would; it is restarted like any child that dies. Returns its pid."""
        proc = self._children[name].proc
        if proc is None or proc.returncode is not None:
            raise ProcessLookupError(f"{name} is not running")
        proc.send_signal(sig)
        await proc.wait()
        return proc.pid

    async def stop_process(self, name: str) -> None:
        """Stop one child and keep it down until `start_process`."""
        await self._halt(self._children[name])

    async def start_process(self, name: str) -> None:
        child = self._children[name]
        if not child.wanted:
            self._launch(child)

    async def wait_running(self, name: str, *, other_than: int | None = None, timeout_s: float = 30.0) -> int:
        """Wait until the child runs (as a new process when `other_than` is its old pid); its pid."""
        spawned = self._children[name].spawned
        async with asyncio.timeout(timeout_s), spawned:
            await spawned.wait_for(lambda: self.pid(name) not in (None, other_than))
        pid = self.pid(name)
        assert pid is not None
        return pid

    async def _first_attempt(self, child: _Child) -> None:
        async with child.spawned:
            await child.spawned.wait_for(lambda: child.attempts > 0)

    def _launch(self, child: _Child) -> None:
        child.wanted = True
        child.stop_requested.clear()
        child.keeper = asyncio.get_running_loop().create_task(self._keep(child), name=f"keep-{child.spec.name}")

    async def _halt(self, child: _Child) -> None:
        child.wanted = False
        child.stop_requested.set()
        if child.keeper is not None:
            await child.keeper
            child.keeper = None

    async def _keep(self, child: _Child) -> None:
        loop = asyncio.get_running_loop()
        delay = self.backoff.initial_s
        while child.wanted:
            started = loop.time()
            returncode = await self._run_once(child)
            if not child.wanted:
                return
            if loop.time() - started >= self.backoff.stable_s:
                delay = self.backoff.initial_s
            child.restarts += 1
            log.warning("process exited; restarting", extra={
                "child": child.spec.name, "returncode": returncode, "restart_in_s": delay,
                "restarts": child.restarts, "log": str(child.log_path)})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await child.stop_requested.wait()
            delay = min(delay * 2, self.backoff.max_s)

    async def _run_once(self, child: _Child) -> int | None:
        """Run the child until it exits or a stop is requested (then terminate it); its exit code."""
        try:
            proc = await self._spawn(child)
        except OSError as e:
            log.error("process could not start", extra={"child": child.spec.name, "error": str(e)})
            return None
        finally:
            async with child.spawned:
                child.attempts += 1
                child.spawned.notify_all()
        log.info("process started", extra={"child": child.spec.name, "pid": proc.pid})
        exited = asyncio.ensure_future(proc.wait())
        stopping = asyncio.ensure_future(child.stop_requested.wait())
        await asyncio.wait((exited, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not exited.done():
            await self._terminate(child, proc)
        return await exited

    async def _spawn(self, child: _Child) -> asyncio.subprocess.Process:
        with child.log_path.open("ab") as out:
            child.proc = await asyncio.create_subprocess_exec(
                *child.spec.argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                env=self.env, start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return child.proc

    async def _terminate(self, child: _Child, proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(self.stop_timeout_s):
                await proc.wait()
        except TimeoutError:
            log.warning("process ignored SIGTERM; killing", extra={
                "child": child.spec.name, "timeout_s": self.stop_timeout_s})
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        log.info("process stopped", extra={"child": child.spec.name, "returncode": proc.returncode})

    async def _wait_ready(self, child: _Child, port: int, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            await asyncio.sleep(0.05)
        raise NotReady(f"{child.spec.name} did not listen on 127.0.0.1:{port} within {timeout_s:.0f}s; "
                       f"see {child.log_path}:\n{tail(child.log_path)}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
