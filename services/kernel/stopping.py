"""How a Shoal process stops on SIGTERM or SIGINT: always, and cleanly when it can.

A signal cancels the service's main task, whose `finally` blocks close what it holds (an agent
flushes its reports and saves a snapshot) before the connection and the metrics listener close.
A cancellation can be lost, though: on Python 3.11 `asyncio.wait_for` returns a result that arrives
together with the cancellation and drops the cancellation (gh-86296, fixed in 3.12), so a task
looping around a `wait_for` can carry on as if nothing was asked, and whatever awaits it (a
`TaskGroup`, the runner) waits for ever. Shoal's own code does not use it and Shoal's nats client
raises what nats-py's requests drop (`nats_client`), but a library may still drop one somewhere
else, so this stays the backstop. Cancelling again would not
reach such a task and would cut short the clean stops in progress, so instead the process ends
itself `DEADLINE_S` after the signal: first it logs the stack of every task still pending, which
names the one that did not stop, then it exits with `EXIT_STOP_OVERDUE`. `kill` always works, and
a supervisor never has to guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

DEADLINE_S = 8.0
"""Longer than a clean stop takes (an agent flushes reports and a snapshot, 2 s each; the connection
drains in 2 s) and shorter than `shoal up`'s 10 s before it kills a child."""
REPORT_S = 0.5
"""How long the loop is given to log its pending tasks before the process ends anyway."""
EXIT_STOP_OVERDUE = 3


class Stopper:
    """Owns the signal handlers of one running main task."""

    def __init__(self, main: asyncio.Task[None], deadline_s: float = DEADLINE_S,
                 overdue: Callable[[], object] | None = None) -> None:
        self.main = main
        self.deadline_s = deadline_s
        self.overdue = overdue or self._exit
        self._loop = main.get_loop()
        self._deadline: threading.Timer | None = None

    def install(self) -> None:
        """Plain Python signal handlers, not the loop's: they run even while the loop is stuck, so the
        deadline starts whatever the loop is doing (the cancellation still goes through the loop)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _sig, _frame: self.signalled())

    def signalled(self) -> None:
        if self._deadline is not None:
            return  # already stopping: the deadline runs from the first signal
        # A thread, not a loop timer: it must fire even if the loop never comes back.
        self._deadline = threading.Timer(self.deadline_s, self.overdue)
        self._deadline.daemon = True
        self._deadline.start()
        self._loop.call_soon_threadsafe(self.main.cancel)

    def _exit(self) -> None:
        """On the deadline thread: the loop logs what is pending (if it still runs), then the end."""
        logged = threading.Event()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing pending to show
            self._loop.call_soon_threadsafe(_log_pending, self.deadline_s, logged)
        if not logged.wait(REPORT_S):
            log.error("did not stop within the deadline after the signal, and the event loop does not run",
                      extra={"deadline_s": self.deadline_s})
        logging.shutdown()
        os._exit(EXIT_STOP_OVERDUE)


def _log_pending(deadline_s: float, logged: threading.Event) -> None:
    stacks = []
    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(limit=8, file=out)
        stacks.append(out.getvalue())
    log.error("did not stop within the deadline after the signal; exiting without finishing the stop",
              extra={"deadline_s": deadline_s, "pending": stacks})
    logged.set()
