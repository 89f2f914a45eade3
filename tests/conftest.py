from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from services.kernel.eventlog import EventLog
from services.kernel.jetstream import JetStreamLog, connect, ensure_stream
from services.kernel.memlog import MemoryLog
from tests.docker_engine import docker_engine, ensure_test_image
from tests.nats_server import NatsServer, nats_server

# Agents started by tests forward the routing mesh themselves unless a test asks for the kernel:
# the default, `auto`, would pick the kernel wherever nftables happens to be installed, which an
# earlier test may have done. Kernel and auto modes have their own tests.
os.environ.setdefault("SHOAL_INGRESS_MODE", "proxy")


@pytest.fixture
def nats() -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream on a free port and an empty temporary store."""
    with nats_server() as server:
        yield server


@pytest.fixture
async def jslog(nats: NatsServer) -> AsyncIterator[JetStreamLog]:
    nc = await connect([nats.url], "test")
    await ensure_stream(nc, "SHOAL")
    yield JetStreamLog(nc, "SHOAL")
    await nc.close()


@pytest.fixture(params=["memory", "jetstream"])
async def eventlog(request: pytest.FixtureRequest) -> AsyncIterator[EventLog]:
    """The in-memory log and a real JetStream stream in turn: a test above the seam runs against both."""
    if request.param == "memory":
        yield MemoryLog()
        return
    server: NatsServer = request.getfixturevalue("nats")
    nc = await connect([server.url], "test")
    await ensure_stream(nc, "SHOAL")
    yield JetStreamLog(nc, "SHOAL")
    await nc.close()


@pytest.fixture(scope="session")
def engine() -> Iterator[str]:
    """One Docker engine for the whole run (a private dockerd where none answers), with the test image.
    Tests that share it touch only containers of their own nodes or services."""
    with docker_engine() as host:
        ensure_test_image(host)
        yield host
