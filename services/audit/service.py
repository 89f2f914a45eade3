"""The audit process: the durable consumer around `Auditor`, fetching in batches."""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path

import nats.errors
import nats.js.errors
import platformdirs
from nats.js import JetStreamContext, api

from services.audit.auditor import Auditor, JournalAhead
from services.audit.journal import Journal
from services.kernel.config import env
from services.kernel.jetstream import stream_seq
from services.kernel.process import Runtime
from services.kernel.subjects import ALL

log = logging.getLogger(__name__)

NAME = "audit"


def add_args(parser: argparse.ArgumentParser) -> None:
    default = Path(platformdirs.user_data_dir("shoal")) / "audit.jsonl"
    parser.add_argument("--out", type=Path, default=Path(env("SHOAL_AUDIT_FILE", str(default))),
                        help="the JSON lines journal (env SHOAL_AUDIT_FILE)")
    parser.add_argument("--durable", default=env("SHOAL_AUDIT_CONSUMER", "shoal-audit"),
                        help="durable JetStream consumer name (env SHOAL_AUDIT_CONSUMER)")
    parser.add_argument("--batch", type=int, default=256, help="entries fetched, written and fsynced at once")


async def serve(rt: Runtime, args: argparse.Namespace) -> None:
    auditor = Auditor(Journal(args.out))
    try:
        await auditor.start(rt.log)
    except JournalAhead as e:
        log.error("audit journal refused", extra={"error": str(e)})
        raise SystemExit(str(e)) from e
    js = rt.nc.jetstream()
    while True:
        sub = await _subscribe(js, rt.common.stream, args.durable, auditor.last, args.batch)
        try:
            await _drain(sub, auditor, args.batch)
        finally:
            await sub.unsubscribe()


async def _drain(sub: JetStreamContext.PullSubscription, auditor: Auditor, batch: int) -> None:
    """Fetch, write, ack, until a delivery arrives out of order (then the caller starts again)."""
    while True:
        try:
            msgs = await sub.fetch(batch, timeout=1.0)
        except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either when nothing is waiting
            continue
        if not await auditor.handle([stream_seq(m.reply) for m in msgs], msgs):
            log.warning("delivery out of order; restarting the consumer at the journal's end",
                        extra={"seq": auditor.last})
            return


async def _subscribe(js: JetStreamContext, stream: str, durable: str, last: int,
                     batch: int) -> JetStreamContext.PullSubscription:
    """The consumer always starts right after the journal's last line. A durable consumer left by a
    crash holds delivered-but-unacked entries that JetStream would redeliver only after `ack_wait`,
    behind newer ones: resuming it would reorder the journal, so it is replaced."""
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_consumer(stream, durable)
    config = api.ConsumerConfig(ack_policy=api.AckPolicy.ALL, deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                                opt_start_seq=last + 1, max_ack_pending=batch, ack_wait=60)
    sub = await js.pull_subscribe(ALL, durable=durable, stream=stream, config=config)
    log.info("auditing", extra={"consumer": durable, "from_seq": last + 1})
    return sub
