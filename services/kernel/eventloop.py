"""Which asyncio event loop a process runs on.

uvloop (libuv underneath) moves bytes between sockets with a sixth to a half less CPU than
CPython's selector loop, which matters where a process forwards traffic (the agent's routing mesh). It has no Windows
build, so it is used where it is installed and the standard loop everywhere else; `asyncio` can always
be asked for, to rule the faster loop out when chasing a problem.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable

from services.kernel.config import env

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
CHOICES = ("uvloop", "asyncio")


def default() -> str:
    """`SHOAL_EVENT_LOOP` if set, else uvloop where it is installed."""
    return env("SHOAL_EVENT_LOOP", "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio")


def factory(name: str) -> LoopFactory:
    """A new loop of the named kind; fails with what to do when uvloop is asked for but missing."""
    if name not in CHOICES:  # SHOAL_EVENT_LOOP is not checked by argparse's choices
        raise SystemExit(f"unknown event loop {name!r}: use one of {', '.join(CHOICES)}")
    if name == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        raise SystemExit("uvloop is not installed: install it (pip install uvloop) "
                         "or ask for the standard loop (--event-loop asyncio)") from None
    return uvloop.new_event_loop
