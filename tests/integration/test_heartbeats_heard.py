"""An overloaded orchestrator does not mark nodes down for heartbeats it has not read yet (real
nats-server): the listener's round trips (`heartbeats.confirm_heard`) bound what silence counts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest
from nats.aio.msg import Msg

from schemas.events import NodeStatusChanged
from schemas.heartbeat import Heartbeat
from services.kernel import subjects
from services.kernel.jetstream import connect
from services.orchestrator.heartbeats import confirm_heard
from services.orchestrator.liveness import HEARTBEATS_SUBJECT, Liveness
from tests.nats_server import NatsServer, nats_server
from tests.world import World

GRACE_S = 0.5


class Agent(threading.Thread):
    """Heartbeats from its own thread and event loop, so they go on while the test's loop is blocked."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stopped = threading.Event()

    def run(self) -> None:
        asyncio.run(self._beat())

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)

    async def _beat(self) -> None:
        nc = await connect([self.url], "agent")
        payload = msgspec.json.encode(Heartbeat(nodes=["n1"], period=0.1))
        while not self.stopped.is_set():
            await nc.publish(subjects.heartbeat("n1"), payload)
            await nc.flush()
            await asyncio.sleep(0.05)
        await nc.close()


@pytest.fixture
async def listening(nats: NatsServer) -> AsyncIterator[Liveness]:
    nc = await connect([nats.url], "orchestrator")
    liveness = Liveness(time.time_ns(), grace_s=GRACE_S)

    async def on_heartbeat(msg: Msg) -> None:
        liveness.observe(msg.data, time.time_ns())

    sub = await nc.subscribe(HEARTBEATS_SUBJECT, cb=on_heartbeat)
    heard = asyncio.create_task(confirm_heard(nc, sub, liveness))
    yield liveness
    heard.cancel()
    await nc.close()


async def until(condition: Callable[[], bool], what: str, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


def busy(seconds: float) -> None:
    """An overloaded process: a long stretch in which its event loop runs nothing else."""
    time.sleep(seconds)


def downs(liveness: Liveness, w: World) -> list[str]:
    decision = liveness.decide(w.state, set(), set(), time.time_ns())
    return [i.event.node_id for i in decision.intents if isinstance(i.event, NodeStatusChanged)]


async def test_a_blocked_listener_marks_no_node_down_for_heartbeats_waiting_unread(
        nats: NatsServer, listening: Liveness) -> None:
    liveness, w = listening, World()
    w.node("n1")
    agent = Agent(nats.url)
    agent.start()
    try:
        await until(lambda: "n1" in liveness.seen and liveness.heard_until_ns is not None, "heard n1")
        busy(4 * GRACE_S)  # n1's heartbeats pile up on the connection meanwhile
        assert downs(liveness, w) == [], "n1 marked down for heartbeats sent but not read yet"
        unblocked_ns = time.time_ns()
        await until(lambda: (liveness.heard_until_ns or 0) > unblocked_ns, "the listener caught up")
        assert downs(liveness, w) == [] and liveness.seen["n1"].at_ns > unblocked_ns
    finally:
        agent.stop()
    silent_ns = time.time_ns()
    await until(lambda: downs(liveness, w) == ["n1"], "a node that really fell silent goes down")
    assert time.time_ns() - silent_ns >= GRACE_S * 1e9


async def test_no_node_goes_down_while_the_listener_is_cut_off_from_the_server() -> None:
    """While nats-py reconnects, its flush returns without a round trip: that must not count as
    having heard everything, or every node would go down after a server restart longer than the grace."""
    with nats_server() as first:
        port, store = first.port, first.store
        nc = await connect([first.url], "orchestrator")
        liveness, w = Liveness(time.time_ns(), grace_s=GRACE_S), World()
        w.node("n1")

        async def on_heartbeat(msg: Msg) -> None:
            liveness.observe(msg.data, time.time_ns())

        sub = await nc.subscribe(HEARTBEATS_SUBJECT, cb=on_heartbeat)
        heard = asyncio.create_task(confirm_heard(nc, sub, liveness))
        agent = Agent(first.url)
        agent.start()
        try:
            await until(lambda: "n1" in liveness.seen and liveness.heard_until_ns is not None, "heard n1")
            first.kill()
            cut_ns = time.time_ns()
            while time.time_ns() - cut_ns < 6 * GRACE_S * 1e9:
                assert downs(liveness, w) == [], "n1 marked down while the listener could hear nobody"
                await asyncio.sleep(0.05)
            with nats_server(store, port):
                back_ns = time.time_ns()
                await until(lambda: liveness.seen["n1"].at_ns > back_ns, "n1 heard again after the restart", 30)
                assert downs(liveness, w) == []
                agent.stop()  # while its server answers: closing after it has gone raises in its thread
        finally:
            agent.stop()
            heard.cancel()
            await asyncio.gather(heard, return_exceptions=True)
            await nc.close()
