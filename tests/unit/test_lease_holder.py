"""The lease holder's id: readable as which process holds it, and unique where pids repeat."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

from services.kernel.lease import holder_id


def test_a_holder_is_host_pid_and_a_nonce_drawn_once_per_process() -> None:
    host, pid, nonce = holder_id().split("/")
    assert (host, int(pid)) == (socket.gethostname(), os.getpid())
    assert re.fullmatch("[0-9a-f]{8}", nonce)
    assert holder_id() == holder_id(), "one id for the process's whole life"
    other = subprocess.run([sys.executable, "-c", "from services.kernel.lease import holder_id; print(holder_id())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert other.split("/")[2] != nonce, "another process (in its own pid namespace it may share the pid) differs"
