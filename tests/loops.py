"""Run an async test once on each event loop a Shoal process can pick (`services.kernel.eventloop`).

pytest-asyncio offers a loop per test only through a hook that applies to every test of the tree;
this keeps the choice on the tests that forward bytes, where the loops really differ (uvloop starts
reading a connection after `connection_made`, asyncio before). Fixtures must not open sockets on
pytest-asyncio's loop: the test's body runs on its own.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from services.kernel import eventloop

AsyncTest = Callable[..., Coroutine[Any, Any, None]]


def on_each_loop(test: AsyncTest) -> Callable[..., None]:
    @functools.wraps(test)
    def run(event_loop_name: str, *args: Any, **kwargs: Any) -> None:
        with asyncio.Runner(loop_factory=eventloop.factory(event_loop_name)) as runner:
            runner.run(test(*args, **kwargs))

    params = [inspect.Parameter("event_loop_name", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              *inspect.signature(test).parameters.values()]
    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]  # what pytest reads
    parametrized: Callable[..., None] = pytest.mark.parametrize("event_loop_name", eventloop.CHOICES)(run)
    return parametrized
