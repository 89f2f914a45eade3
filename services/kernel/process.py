"""What every Shoal process does before and after its own job.

Parse flags, set up logs and traces, serve metrics, connect to NATS (waiting for it), make sure the
stream exists, run the service until SIGTERM/SIGINT, then shut down cleanly. A service supplies
only its flags and one coroutine.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client

from services.kernel import eventloop, logs, tracing
from services.kernel.config import Common, add_common
from services.kernel.jetstream import JetStreamLog, ServerTooOld, StreamRefused, connect, ensure_stream
from services.kernel.metrics import NATS_RECONNECTS, serve_metrics
from services.kernel.snapshot import ObjectStoreSnapshots
from services.kernel.stopping import Stopper

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 1.0
APPEND_TRIES = 8
"""A lost stream leader takes 4-8 s to replace (nats-rules 10): re-send after 1 s, same Msg-Id,
for ~12 s in all; then the write fails as `LogUnavailable` (a 503 from the api)."""


@dataclass
class Runtime:
    name: str
    common: Common
    nc: Client
    log: JetStreamLog
    snapshots: ObjectStoreSnapshots
    metrics_addr: str


Service = Callable[[Runtime, argparse.Namespace], Awaitable[None]]


def run(name: str, service: Service, add_args: Callable[[argparse.ArgumentParser], None],
        argv: Sequence[str] | None = None, description: str = "") -> None:
    parser = argparse.ArgumentParser(prog=f"shoal {name}", description=description)
    add_common(parser)
    add_args(parser)
    args = parser.parse_args(argv)
    common = Common.from_args(args)
    logs.setup(name, common.log_level)
    tracing.setup(name)
    try:
        # A service offering --event-loop (the agent) picks its loop; the others run the standard one.
        with asyncio.Runner(loop_factory=eventloop.factory(getattr(args, "event_loop", "asyncio"))) as runner:
            runner.run(_main(name, common, service, args))
    except KeyboardInterrupt:
        pass
    except (StreamRefused, ServerTooOld) as e:  # what to do is in the message: no traceback to read past
        log.error("cannot start", extra={"reason": str(e)})
        sys.exit(1)
    except Exception:
        log.exception("process failed")
        sys.exit(1)


async def _main(name: str, common: Common, service: Service, args: argparse.Namespace) -> None:
    runner, metrics_addr = await serve_metrics(common.metrics_addr)
    log.info("metrics listening", extra={"addr": metrics_addr})
    main = asyncio.current_task()
    assert main is not None
    stopper = Stopper(main)
    stopper.install()
    nc = await _connect(common.servers, name)
    try:
        await when_jetstream_answers(lambda: ensure_stream(nc, common.stream, common.replicas))
        rt = Runtime(name=name, common=common, nc=nc,
                     log=JetStreamLog(nc, common.stream, ack_timeout=ACK_TIMEOUT_S, tries=APPEND_TRIES),
                     snapshots=ObjectStoreSnapshots(nc.jetstream(), common.stream, common.replicas),
                     metrics_addr=metrics_addr)
        await service(rt, args)
    except asyncio.CancelledError:
        log.info("stopping")
    finally:
        await _close(nc)
        await runner.cleanup()


async def when_jetstream_answers(attempt: Callable[[], Awaitable[None]]) -> None:
    """A JetStream cluster answers only once it has elected its meta leader: wait for it."""
    delay = 0.2
    while True:
        try:
            await attempt()
            return
        except (nats.errors.Error, TimeoutError) as e:
            log.warning("waiting for JetStream", extra={"error": repr(e)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _connect(servers: list[str], name: str) -> Client:
    """Wait for NATS instead of failing: under `shoal up` a process may start before its server."""
    delay = 0.1
    while True:
        try:
            nc = await connect(servers, name)
        except (OSError, nats.errors.NoServersError, TimeoutError) as e:
            log.warning("waiting for NATS", extra={"servers": servers, "error": str(e)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        nc._reconnected_cb = _on_reconnect  # nats-py offers no setter after connect
        return nc


async def _on_reconnect() -> None:
    NATS_RECONNECTS.inc()
    log.info("reconnected to NATS")


async def _close(nc: Client) -> None:
    try:
        async with asyncio.timeout(2):
            await nc.drain()
    except (TimeoutError, nats.errors.ConnectionClosedError, asyncio.CancelledError):
        await nc.close()
