"""A signalled process stops even when a cancellation is lost (Python 3.11's wait_for can drop one)
and ends itself when its stop hangs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from services.kernel.stopping import EXIT_STOP_OVERDUE, Stopper


async def test_a_cancellation_the_service_drops_is_sent_again_until_it_is_stopping() -> None:
    dropped = 0
    overdue = threading.Event()

    async def service() -> None:
        nonlocal dropped
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if dropped < 2:  # as a wait_for whose result came with the cancellation does
                    dropped += 1
                    continue
                stopper.stopping = True
                raise

    main = asyncio.create_task(service())
    stopper = Stopper(main, deadline_s=30, overdue=lambda _: overdue.set())
    await asyncio.sleep(0)
    stopper.signalled()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(main, 5)
    assert dropped == 2
    assert not overdue.is_set()


async def test_no_cancellation_once_the_service_is_stopping() -> None:
    cancels = 0

    async def service() -> None:
        nonlocal cancels
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            stopper.stopping = True
        while True:  # a slow clean-up must not be cut short
            try:
                await asyncio.sleep(0.05)
                if cancels == 0 and loop.time() > cleanup_ends:
                    return
            except asyncio.CancelledError:
                cancels += 1

    loop = asyncio.get_running_loop()
    cleanup_ends = loop.time() + 1.5
    main = asyncio.create_task(service())
    stopper = Stopper(main, deadline_s=30, overdue=lambda _: None)
    await asyncio.sleep(0)
    stopper.signalled()
    await asyncio.wait_for(main, 5)
    assert cancels == 0


SCRIPT = """
import asyncio, logging, os, signal, sys
from services.kernel.stopping import Stopper

async def main() -> None:
    stopper = Stopper(asyncio.current_task(), deadline_s=0.5)
    stopper.install()
    os.kill(os.getpid(), signal.SIGTERM)
    while True:  # never stops: every cancellation is swallowed
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass

logging.basicConfig(stream=sys.stderr, format="%(message)s")
asyncio.run(main())
"""


def test_a_stop_that_hangs_ends_the_process_after_the_deadline_saying_so() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == EXIT_STOP_OVERDUE, done.stderr
    assert "did not stop within the deadline after the signal" in done.stderr
