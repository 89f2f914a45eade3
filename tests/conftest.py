from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from services.kernel.jetstream import JetStreamLog, connect, ensure_stream
from tests.nats_server import NatsServer, nats_server


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
