"""How a Shoal process stops on SIGTERM or SIGINT: always, and cleanly when it can.

A signal cancels the service's main task, whose `finally` closes the connection and the metrics
listener. One `cancel()` is not enough on Python 3.11: `asyncio.wait_for` returns a result that
arrives together with the cancellation and drops the cancellation (gh-86296, fixed in 3.12), so any
loop around a `wait_for` (ours, or nats-py's inside a request or a fetch) can carry on as if nothing
was asked. The main task is therefore cancelled again every `RECANCEL_S` until it says it is stopping.
And should the stop still hang (a task that swallows its cancellation when `asyncio.Runner` cancels
what is left), the process ends itself `DEADLINE_S` after the signal, saying so, so that `kill` and
`shoal up`'s stop always work and a supervisor never has to guess.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

RECANCEL_S = 0.5
DEADLINE_S = 8.0
"""Longer than a clean stop takes (an agent flushes reports and a snapshot, 2 s each; the connection
drains in 2 s) and shorter than `shoal up`'s 10 s before it kills a child."""
EXIT_STOP_OVERDUE = 3


class Stopper:
    """Owns the signal handlers of one running main task."""

    def __init__(self, main: asyncio.Task[None], deadline_s: float = DEADLINE_S,
                 overdue: Callable[[float], None] | None = None) -> None:
        self.main = main
        self.deadline_s = deadline_s
        self.overdue = overdue or _overdue
        self.stopping = False
        """Set by the main task once it has seen its cancellation: no more cancels from here on."""
        self._loop = main.get_loop()
        self._deadline: threading.Timer | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self.signalled)

    def signalled(self) -> None:
        if self._deadline is None:
            # A thread, not a loop timer: it must fire even if the loop never comes back.
            self._deadline = threading.Timer(self.deadline_s, self.overdue, args=(self.deadline_s,))
            self._deadline.daemon = True
            self._deadline.start()
        self._cancel()

    def _cancel(self) -> None:
        if self.stopping or self.main.done():
            return
        self.main.cancel()
        self._loop.call_later(RECANCEL_S, self._cancel)


def _overdue(deadline_s: float) -> None:
    log.error("did not stop within the deadline after the signal; exiting without finishing the stop",
              extra={"deadline_s": deadline_s})
    logging.shutdown()
    os._exit(EXIT_STOP_OVERDUE)
