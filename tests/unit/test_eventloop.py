"""Which loop a process runs on: uvloop where installed, the standard one on request."""

from __future__ import annotations

import argparse
import asyncio

import pytest
import uvloop

from services.agent.config import add_args
from services.kernel import eventloop


def test_uvloop_is_the_default_where_installed_and_the_environment_can_ask_for_asyncio(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_EVENT_LOOP", raising=False)
    assert eventloop.default() == "uvloop"
    monkeypatch.setenv("SHOAL_EVENT_LOOP", "asyncio")
    assert eventloop.default() == "asyncio"


@pytest.mark.parametrize(("name", "kind"), [("uvloop", uvloop.Loop), ("asyncio", asyncio.SelectorEventLoop)])
def test_factory_makes_the_named_loop(name: str, kind: type) -> None:
    loop = eventloop.factory(name)()
    try:
        assert isinstance(loop, kind)
    finally:
        loop.close()


def test_the_agent_takes_the_loop_from_its_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_EVENT_LOOP", raising=False)
    parser = argparse.ArgumentParser()
    add_args(parser)
    assert parser.parse_args([]).event_loop == "uvloop"
    assert parser.parse_args(["--event-loop", "asyncio"]).event_loop == "asyncio"
    with pytest.raises(SystemExit):
        parser.parse_args(["--event-loop", "trio"])


def test_an_unknown_loop_from_the_environment_stops_the_process_saying_what_to_use() -> None:
    with pytest.raises(SystemExit, match="use one of uvloop, asyncio"):
        eventloop.factory("trio")
