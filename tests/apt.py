"""Debian packages a test installs for itself, one apt-get at a time.

The suite runs in two pytest-xdist workers, and two apt-get runs at once fail on dpkg's lock: every
install a test makes (including through `services.cli.monitoring`) holds `apt_lock()`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

LOCK = Path(tempfile.gettempdir()) / "shoal-tests-apt.lock"
KERNEL_MODE = {"nft": "nftables", "conntrack": "conntrack"}
"""What an agent in `--ingress-mode kernel` runs (command: package)."""


@contextlib.contextmanager
def apt_lock() -> Iterator[None]:
    with LOCK.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def apt_install(*packages: str, recommends: bool = True) -> subprocess.CompletedProcess[bytes]:
    """apt-get update, then install `packages`; the caller says what a failure means."""
    no_recommends = () if recommends else ("--no-install-recommends",)
    with apt_lock():
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        return subprocess.run(["apt-get", "install", "-y", "-qq", *no_recommends, *packages], capture_output=True,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def commands(needed: dict[str, str], what: str) -> dict[str, str]:
    """The paths of the `needed` commands (command: the Debian package holding it), the missing
    packages installed first when root; AssertionError saying what to install otherwise."""
    missing = sorted({pkg for name, pkg in needed.items() if shutil.which(name) is None})
    if missing and os.geteuid() == 0:
        apt_install(*missing, recommends=False)
    found = {name: shutil.which(name) for name in needed}
    absent = sorted({needed[name] for name, path in found.items() if path is None})
    if absent:
        raise AssertionError(f"{what} need Debian's {' and '.join(absent)}: `apt-get install {' '.join(absent)}` "
                             "(the tests install them when run as root)")
    return {name: path for name, path in found.items() if path is not None}
