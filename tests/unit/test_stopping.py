"""A signalled process stops: cleanly when its tasks stop, and by itself, naming the task that did
not, when a cancellation is lost (Python 3.11's wait_for can drop one)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from services.kernel.stopping import EXIT_STOP_OVERDUE, Stopper

SCRIPT = """
import asyncio, logging, os, signal, sys
from services.kernel.logs import setup
from services.kernel.stopping import Stopper

async def {name}() -> None:
    while True:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            if {swallow}:
                continue  # as a loop around a wait_for whose result came with the cancellation does
            raise

async def main() -> None:
    stopper = Stopper(asyncio.current_task(), deadline_s=1.0)
    stopper.install()
    child = asyncio.create_task({name}())
    await asyncio.sleep(0)
    os.kill(os.getpid(), signal.SIGTERM)
    try:
        await asyncio.sleep(10)
    finally:
        child.cancel()
        await child  # a TaskGroup waits for its children so

setup("test", "info")
try:
    asyncio.run(main())
except asyncio.CancelledError:
    sys.exit(0)
"""


def _run(name: str, swallow: bool) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT.format(name=name, swallow=swallow)], capture_output=True,
                          text=True, timeout=30, cwd=Path(__file__).parents[2])


def test_a_stop_that_hangs_ends_the_process_after_the_deadline_naming_the_task() -> None:
    done = _run("keeps_going", swallow=True)
    assert done.returncode == EXIT_STOP_OVERDUE, done.stderr
    assert "did not stop within the deadline after the signal" in done.stderr
    assert "keeps_going" in done.stderr, "the log names the task that did not stop"


BLOCKED = """
import asyncio, os, signal, time
from services.kernel.logs import setup
from services.kernel.stopping import Stopper

async def main() -> None:
    Stopper(asyncio.current_task(), deadline_s=1.0).install()
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # the loop never comes back

setup("test", "info")
asyncio.run(main())
"""


def test_a_process_whose_loop_is_stuck_still_ends_after_the_deadline() -> None:
    done = subprocess.run([sys.executable, "-c", BLOCKED], capture_output=True, text=True, timeout=30,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == EXIT_STOP_OVERDUE, done.stderr
    assert "the event loop does not run" in done.stderr


def test_a_clean_stop_ends_before_the_deadline() -> None:
    done = _run("stops", swallow=False)
    assert done.returncode == 0, done.stderr
    assert "did not stop" not in done.stderr


async def test_the_deadline_runs_from_the_first_signal() -> None:
    fired = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.create_task(asyncio.sleep(10))
    stopper = Stopper(main, deadline_s=1.0, overdue=lambda: loop.call_soon_threadsafe(fired.set))
    stopper.signalled()
    await asyncio.sleep(0.6)
    stopper.signalled()  # a second signal does not restart the clock: 0.4 s left, not 1 s
    await asyncio.wait_for(fired.wait(), 0.9)
    assert main.cancelled()
    with pytest.raises(asyncio.CancelledError):
        await main
