"""What Linux's /proc says about a process: enough to tell "still ours" from "pid reused".

A pid alone names a process only while it lives; the pair (pid, start time in clock ticks since
boot) names one process forever. Zombies count as dead: their exit has happened, whoever reaps them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Stat:
    state: str
    ppid: int
    pgrp: int
    start_time: int

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


def stat(pid: int) -> Stat | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields are counted after its last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return Stat(state=fields[0].decode(), ppid=int(fields[1]), pgrp=int(fields[2]), start_time=int(fields[19]))


def is_running(pid: int, start_time: int) -> bool:
    st = stat(pid)
    return st is not None and st.alive and st.start_time == start_time


def cmdline(pid: int) -> list[str]:
    """A process's argv (empty if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def find(argv_prefix: list[str]) -> int | None:
    """A live process whose argv starts with `argv_prefix` (a scan of /proc: for rare recoveries only)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if cmdline(pid)[: len(argv_prefix)] == argv_prefix and (st := stat(pid)) is not None and st.alive:
            return pid
    return None
