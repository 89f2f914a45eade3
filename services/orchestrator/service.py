"""The orchestrator process: a projection of the whole log, heartbeats in, the decide-append loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from services.kernel.config import env
from services.kernel.lease import elect
from services.kernel.metrics import ProjectionCollector
from services.kernel.process import Runtime
from services.kernel.projection import Projection
from services.kernel.reconcile import Reconciler, combine
from services.kernel.writer import Writer
from services.orchestrator import cluster_spec
from services.orchestrator.decide import DEFAULT_HISTORY_LIMIT, Orchestrator, Settings
from services.orchestrator.heartbeats import confirm_heard
from services.orchestrator.liveness import HEARTBEATS_SUBJECT, Liveness
from services.orchestrator.metrics import HeldCollector, count_appended
from services.orchestrator.nodes import DOWN
from services.orchestrator.orphans import ORPHAN_AFTER_S
from services.orchestrator.pacing import DEFAULT_UNPLACED_LIMIT

log = logging.getLogger(__name__)

NAME = "orchestrator"


def add_args(parser: argparse.ArgumentParser) -> None:
    # string defaults go through `type` too, so a bad environment value is a usage error, not a crash
    parser.add_argument("--heartbeat-grace", type=float, default=env("SHOAL_HEARTBEAT_GRACE", "") or None,
                        metavar="SECONDS",
                        help="mark a node down after this much silence (default: 3 of its heartbeat periods; "
                             "env SHOAL_HEARTBEAT_GRACE)")
    parser.add_argument("--task-history-limit", type=int, metavar="N",
                        default=os.environ.get("SHOAL_TASK_HISTORY_LIMIT"),  # None: not given, nothing to warn
                        help="tasks kept per slot, the live one included; negative keeps all. The cluster "
                             "starts with it; once recorded in the log, `docker swarm update "
                             f"--task-history-limit` changes it (default: {DEFAULT_HISTORY_LIMIT}; "
                             "env SHOAL_TASK_HISTORY_LIMIT)")
    parser.add_argument("--orphan-after", type=float, metavar="SECONDS",
                        default=env("SHOAL_ORPHAN_AFTER", str(ORPHAN_AFTER_S)),
                        help="tasks of a node down this long become `orphaned` (default: %(default)s, 24 h; "
                             "env SHOAL_ORPHAN_AFTER)")
    parser.add_argument("--rebalance", action="store_true", default=env("SHOAL_REBALANCE", "") in ("1", "true"),
                        help="rebalance every replicated service when nodes join or return, not only those "
                             "labelled shoal.rebalance=true (env SHOAL_REBALANCE=1)")
    parser.add_argument("--unplaced-limit", type=_tasks, metavar="N",
                        default=env("SHOAL_UNPLACED_LIMIT", str(DEFAULT_UNPLACED_LIMIT)),
                        help="create tasks for new slots only while fewer than N tasks wait for the scheduler, "
                             "so a task is placed soon after it is created; 0 creates them all at once "
                             "(default: %(default)s; env SHOAL_UNPLACED_LIMIT)")


def _tasks(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of tasks, 0 or more (0: no limit)")
    return n


def settings(args: argparse.Namespace) -> Settings:
    limit = DEFAULT_HISTORY_LIMIT if args.task_history_limit is None else args.task_history_limit
    return Settings(history_limit=limit, orphan_after_ns=int(args.orphan_after * 1e9),
                    rebalance=args.rebalance, unplaced_limit=args.unplaced_limit)


def reconciler(projection: Projection, writer: Writer, orchestrator: Orchestrator,
               liveness: Liveness | None = None) -> Reconciler:
    """The loop without its process around it, so tests can run it against any `EventLog`."""
    history_limit = orchestrator.settings.history_limit
    decide = orchestrator if liveness is None else combine(
        orchestrator, liveness.decide, cluster_spec.decider(history_limit, liveness.period_ns))
    return Reconciler(NAME, projection, writer, decide, after_append=count_appended)


def listen(liveness: Liveness, loop: Reconciler) -> Callable[[Msg], Awaitable[None]]:
    """Heartbeat handler: record it, and wake the loop at once for a down node that is back."""

    async def on_heartbeat(msg: Msg) -> None:
        for node_id in liveness.observe(msg.data, time.time_ns()):
            node = loop.projection.state.nodes.get(node_id)
            if node is not None and node.status.state == DOWN:
                loop.poke(node_id=node_id)

    return on_heartbeat


async def serve(rt: Runtime, args: argparse.Namespace) -> None:
    projection = Projection(rt.log, snapshots=rt.snapshots, snapshot_name=NAME, track_changes=True)
    REGISTRY.register(ProjectionCollector(projection))
    liveness = Liveness(time.time_ns(), args.heartbeat_grace)
    orchestrator = Orchestrator(settings(args))
    REGISTRY.register(HeldCollector(orchestrator))
    loop = reconciler(projection, Writer(rt.log, NAME), orchestrator, liveness)
    sub = await rt.nc.subscribe(HEARTBEATS_SUBJECT, cb=listen(liveness, loop))  # before catching up: miss none
    heard = asyncio.get_running_loop().create_task(confirm_heard(rt.nc, sub, liveness), name="heartbeats-heard")
    try:
        await projection.start()
        cluster_spec.warn_if_flag_ignored(projection.state, args.task_history_limit)
        log.info("standing by", extra={"seq": projection.state.seq, "services": len(projection.state.services)})

        async def lead(writer: Writer) -> None:
            liveness.restart(time.time_ns())
            try:
                await loop.lead(writer)
            finally:
                orchestrator.held = []  # a standby holds nothing back; the next term's first pass finds them again

        await elect(rt, projection, lead)
    finally:
        heard.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heard
        await sub.unsubscribe()
        await projection.save_snapshot()
        await projection.stop()
