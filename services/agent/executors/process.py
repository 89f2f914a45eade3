"""The `process` executor: a task's Command + Args as a local process, for hosts without Docker.

Each task runs under a tiny `/bin/sh` wrapper, the way a container runs under its shim:

    sh -c WRAPPER shoal-task <task dir> <cwd> cmd args...
      └─ sh -c 'echo $$ > pid; exec "$@"'   (becomes cmd itself: same pid)

The wrapper is a session leader (its own process group, no terminal), so signals aimed at the agent
never reach tasks. It waits for the command and writes its exit status (128+N for signal N, as
Docker reports) to `<task dir>/exit`, so the status survives the agent. That is the whole point:
the agent may be killed (`kill -9`) or stopped (SIGTERM) at any moment and task processes keep
running, as containers do when dockerd's client goes away; on start the agent adopts them.

The stop signal goes to the command only (Docker signals a container's PID 1), the kill after
the grace period to the whole process group; when the command ends its leftover children are
killed too (a container's processes die with it).

Files in `<state dir>/tasks/<task id>/`: `task.json` (task and node ids), `start` (a start was
attempted), `wrapper` (pid and start time of the wrapper: guards against pid reuse), `pid`
(the command's pid), `exit`, `stdout.log`, `stderr.log` and their checkpoints `stdout.idx`, `stderr.idx`
(`logfiles.py`: how logs are stamped and read).

Watching uses pidfds (Linux >= 5.3): they work for processes this agent did not start. These
small files are read and written in the event loop (microseconds on a local disk); the spawn itself
is `posix_spawn` (vfork + exec, well under a millisecond) and only `rmtree` goes to a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec

from schemas.logs import STDERR, STDOUT, LogBatch, LogQuery
from schemas.service import ContainerSpec
from schemas.task import Task
from services.agent.executor import Container, ExecutorError, NoSuchContainer, OnChange, Phase, stop_grace_s
from services.agent.executors import logfiles, procfs
from services.agent.ports import port_env

log = logging.getLogger(__name__)

_SH = "/bin/sh"
_WRAPPER = """dir=$1 cwd=$2
shift 2
cd "$cwd" && /bin/sh -c 'echo $$ > "$0/pid" && exec "$@"' "$dir" "$@"
echo $? > "$dir/exit"
"""
_NAME = "shoal-task"
_PID_WAIT_S = 2.0
_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND


class _Meta(msgspec.Struct):
    task_id: str
    node_id: str


@dataclass(slots=True)
class _Watch:
    container: Container
    wrapper: int
    fd: int
    exited: asyncio.Future[Container]


class ProcessExecutor:
    kind = "process"

    def __init__(self, state_dir: Path, addr: str = "127.0.0.1") -> None:
        self.root = (state_dir / "tasks").absolute()  # the wrapper changes directory before using it
        self.addr = addr
        """The node's address, where a task that publishes ports is told to listen."""
        self._watched: dict[str, _Watch] = {}
        self._on_change: OnChange | None = None
        self._checkpoints = logfiles.Checkpoints()
        self._checkpointing: asyncio.Task[None] | None = None

    # -- the Executor protocol ------------------------------------------------------------------

    async def prepare(self, task: Task) -> Container:
        d = self._dir(task.id)
        _command(task, d, self.addr)
        d.mkdir(parents=True, exist_ok=True)
        if not (d / "task.json").exists():
            # Written whole or not at all: `list()` treats the file as the container's existence.
            tmp = d / "task.json.tmp"
            tmp.write_bytes(msgspec.json.encode(_Meta(task_id=task.id, node_id=task.node_id)))
            tmp.replace(d / "task.json")
        return self._observe(d)

    async def start(self, task: Task) -> Container:
        d = self._dir(task.id)
        if not (d / "task.json").exists():
            raise ExecutorError(f"task: no such container: {task.id}")
        current = self._observe(d)
        if current.phase is Phase.RUNNING:
            return await self.adopt(current)
        if current.phase is Phase.EXITED:
            return current
        argv, env, cwd = _command(task, d, self.addr)
        wrapper, started = _spawn(d, argv, env, cwd)
        watch = self._watch(current, wrapper, started)
        if watch is None:
            return self._observe(d)
        pid = await _command_pid(d, watch)
        if watch.exited.done():
            return watch.exited.result()
        watch.container = replace(watch.container, phase=Phase.RUNNING, pid=pid)
        return watch.container

    async def stop(self, task: Task) -> Container:
        d = self._dir(task.id)
        if not (d / "task.json").exists():
            raise ExecutorError(f"task: no such container: {task.id}")
        watch = self._watching(d)
        if watch is None:
            return self._observe(d)
        _signal_command(d, watch.wrapper, _stop_signal(task.spec.container_spec))
        try:
            async with asyncio.timeout(stop_grace_s(task)):
                return await asyncio.shield(watch.exited)
        except TimeoutError:
            log.info("grace period over, killing", extra={"task_id": task.id})
            _kill_group(watch.wrapper, signal.SIGKILL)
            return await watch.exited

    async def remove(self, task_id: str) -> None:
        d = self._dir(task_id)
        if not d.exists():
            return
        watch = self._watching(d)
        if watch is not None:
            _kill_group(watch.wrapper, signal.SIGKILL)
            await watch.exited
        await asyncio.to_thread(shutil.rmtree, d, True)

    async def list(self) -> list[Container]:
        if not self.root.is_dir():
            return []
        return [self._observe(d) for d in sorted(self.root.iterdir()) if (d / "task.json").exists()]

    async def adopt(self, container: Container) -> Container:
        d = self._dir(container.task_id)
        watch = self._watching(d)
        return watch.container if watch is not None else self._observe(d)

    def watch(self, on_change: OnChange) -> None:
        self._on_change = on_change

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for watch in self._watched.values():
            loop.remove_reader(watch.fd)
            os.close(watch.fd)
            watch.exited.cancel()
        self._watched.clear()
        self._on_change = None
        if self._checkpointing is not None:
            self._checkpointing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointing
            self._checkpointing = None

    async def logs(self, task_id: str, query: LogQuery) -> AsyncGenerator[LogBatch, None]:
        d = self._dir(task_id)
        if not (d / "task.json").exists():
            raise NoSuchContainer(task_id)
        async for batch in logfiles.read(d, query):
            yield batch

    # -- the task directory ---------------------------------------------------------------------

    def _dir(self, task_id: str) -> Path:
        """Task ids are swarmkit's base-36: anything else (`..`, `/`) could name a path outside the root."""
        if not (task_id.isascii() and task_id.isalnum()):
            raise ExecutorError(f"task: invalid task id {task_id!r}: only letters and digits are allowed")
        return self.root / task_id

    def _observe(self, d: Path) -> Container:
        """The container as the task directory and /proc describe it now."""
        meta = msgspec.json.decode((d / "task.json").read_bytes(), type=_Meta)
        base = Container(task_id=meta.task_id, node_id=meta.node_id, phase=Phase.CREATED, container_id=meta.task_id,
                         pid=_read_int(d / "pid") or 0)
        code = _read_int(d / "exit")
        if code is not None:
            return replace(base, phase=Phase.EXITED, exit_code=code)
        record = self._record(d)
        if record is None:
            return base
        if procfs.is_running(*record):
            return replace(base, phase=Phase.RUNNING)
        return replace(base, phase=Phase.EXITED, exit_code=_bury(d, record[0]))

    def _record(self, d: Path) -> tuple[int, int] | None:
        """The wrapper's (pid, start time). An agent killed between spawning and recording left only
        the `start` mark: then the wrapper is found by its command line and recorded now."""
        try:
            pid, started = (d / "wrapper").read_text().split()
            return int(pid), int(started)
        except (OSError, ValueError):
            pass
        if not (d / "start").exists():
            return None
        pid_found = procfs.find([_SH, "-c", _WRAPPER, _NAME, str(d)])
        st = procfs.stat(pid_found) if pid_found is not None else None
        if pid_found is None or st is None:
            return None
        (d / "wrapper").write_text(f"{pid_found} {st.start_time}\n")
        return pid_found, st.start_time

    # -- watching exits -------------------------------------------------------------------------

    def _watching(self, d: Path) -> _Watch | None:
        """The watch on a running task's wrapper, set up if this executor did not start it."""
        if (watch := self._watched.get(d.name)) is not None:
            return watch
        if not (d / "task.json").exists():
            return None
        current = self._observe(d)
        record = self._record(d)
        if current.phase is not Phase.RUNNING or record is None:
            return None
        return self._watch(current, *record)

    def _watch(self, container: Container, wrapper: int, started: int) -> _Watch | None:
        try:
            fd = os.pidfd_open(wrapper)
        except ProcessLookupError:
            return None
        st = procfs.stat(wrapper)
        if st is None or st.start_time != started:
            os.close(fd)
            return None
        loop = asyncio.get_running_loop()
        watch = _Watch(container=replace(container, phase=Phase.RUNNING), wrapper=wrapper, fd=fd,
                       exited=loop.create_future())
        self._watched[container.task_id] = watch
        loop.add_reader(fd, self._exited, container.task_id)
        if self._checkpointing is None:
            self._checkpointing = loop.create_task(self._checkpoint())
        return watch

    async def _checkpoint(self) -> None:
        """Stamp the logs of every watched task (see `logfiles`): a stat per task and stream per period."""
        while True:
            await asyncio.sleep(logfiles.CHECKPOINT_S)
            for task_id in list(self._watched):
                self._checkpoints.mark(self._dir(task_id))

    def _exited(self, task_id: str) -> None:
        watch = self._watched.pop(task_id)
        asyncio.get_running_loop().remove_reader(watch.fd)
        os.close(watch.fd)
        _kill_group(watch.wrapper, signal.SIGKILL)  # leftovers; the group id stays reserved until reaped
        status = _reap(watch.wrapper)
        d = self._dir(task_id)
        self._checkpoints.mark(d)
        self._checkpoints.forget(d)
        code = _read_int(d / "exit")
        if code is None:
            code = 128 + signal.SIGKILL if status is None else (128 - status if status < 0 else status)
            with contextlib.suppress(OSError):
                (d / "exit").write_text(f"{code}\n")
        container = replace(watch.container, phase=Phase.EXITED, exit_code=code,
                            pid=watch.container.pid or _read_int(d / "pid") or 0)
        watch.exited.set_result(container)
        log.info("task process exited", extra={"task_id": task_id, "exit_code": code})
        if self._on_change is not None:
            self._on_change(container)


def _bury(d: Path, wrapper: int) -> int:
    """A wrapper that died without writing the status was killed (while nobody watched it). What is
    left of its task is killed too, if it verifiably still belongs to the wrapper's process group,
    and 137 is recorded, so the task is not reported failed while its command runs on unseen."""
    pid = _read_int(d / "pid")
    st = procfs.stat(pid) if pid else None
    if st is not None and st.alive and st.pgrp == wrapper:
        _kill_group(wrapper, signal.SIGKILL)
    code = 128 + signal.SIGKILL
    with contextlib.suppress(OSError):
        (d / "exit").write_text(f"{code}\n")
    return code


def _command(task: Task, task_dir: Path, addr: str) -> tuple[list[str], dict[str, str], str]:
    """argv, environment and working directory; a spec that cannot run here is rejected."""
    spec = task.spec.container_spec or ContainerSpec()
    argv = [*(spec.command or []), *(spec.args or [])]
    if not argv:
        raise ExecutorError("task: the process executor needs a command: give the service a command or args "
                            "(the image is not used)")
    env = dict(os.environ) | port_env(task, addr)
    for item in spec.env or ():
        key, sep, value = item.partition("=")
        if sep:
            env[key] = value
    cwd = spec.dir or str(task_dir)
    if spec.dir and not os.path.isdir(spec.dir):
        raise ExecutorError(f"task: working directory {spec.dir!r} does not exist")
    exe = argv[0]
    found = (os.access(os.path.join(cwd, exe), os.X_OK) if "/" in exe
             else shutil.which(exe, path=env.get("PATH", os.defpath)) is not None)
    if not found:
        raise ExecutorError(f'task: exec: "{exe}": executable file not found in $PATH')
    return argv, env, cwd


def _spawn(d: Path, argv: list[str], env: dict[str, str], cwd: str) -> tuple[int, int]:
    """Start the wrapper and record it. Synchronous on purpose: no await between the `start` mark, the
    spawn and the record, so a cancelled start never leaves an unrecorded process behind."""
    (d / "start").touch()
    try:
        pid = os.posix_spawn(
            _SH, [_SH, "-c", _WRAPPER, _NAME, str(d), cwd, *argv], env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, str(logfiles.log_path(d, STDOUT)), _APPEND, 0o644),
                (os.POSIX_SPAWN_OPEN, 2, str(logfiles.log_path(d, STDERR)), _APPEND, 0o644),
            ],
            setsid=True,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # Python ignores these; the task must not
            setsigmask=(),
        )
    except OSError as e:
        raise ExecutorError(f"task: cannot start process: {e}") from e
    st = procfs.stat(pid)
    started = st.start_time if st is not None else 0
    (d / "wrapper").write_text(f"{pid} {started}\n")
    return pid, started


async def _command_pid(d: Path, watch: _Watch) -> int:
    """The command's own pid, which the wrapper's child writes just before it execs the command."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _PID_WAIT_S
    # A file has no change notification short of inotify; a few 2 ms polls cost less than a watcher.
    while (pid := _read_int(d / "pid")) is None and not watch.exited.done() and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.002)
    return pid or 0


def _signal_command(d: Path, wrapper: int, sig: signal.Signals) -> None:
    """Signal the command itself, through a pidfd checked to be the wrapper's child (so a reused pid is
    never hit); before the command exists, the whole group."""
    pid = _read_int(d / "pid")
    if pid is None:
        _kill_group(wrapper, sig)
        return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        st = procfs.stat(pid)
        if st is not None and st.ppid == wrapper:
            signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _reap(pid: int) -> int | None:
    """The wrapper's wait status as an exit code (negative: killed by that signal), if it is our child."""
    try:
        reaped, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if reaped else None


def _stop_signal(spec: ContainerSpec | None) -> signal.Signals:
    name = (spec.stop_signal if spec is not None else None) or "SIGTERM"
    if name.isdigit():
        return signal.Signals(int(name))
    name = name.upper()
    return signal.Signals.__members__.get(name if name.startswith("SIG") else f"SIG{name}", signal.SIGTERM)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None
