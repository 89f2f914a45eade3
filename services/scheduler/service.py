"""The scheduler process: a projection of the whole log and the decide-append loop around `Scheduler`."""

from __future__ import annotations

import argparse
import logging

from prometheus_client import REGISTRY

from services.kernel.lease import elect
from services.kernel.metrics import ProjectionCollector
from services.kernel.process import Runtime
from services.kernel.projection import Projection
from services.kernel.reconcile import Reconciler
from services.kernel.writer import Writer
from services.scheduler.decide import Scheduler
from services.scheduler.metrics import PendingCollector, observe_assignments

log = logging.getLogger(__name__)

NAME = "scheduler"


def add_args(parser: argparse.ArgumentParser) -> None:
    """No flags of its own yet: everything it needs is in the log."""


def reconciler(projection: Projection, writer: Writer, scheduler: Scheduler | None = None) -> Reconciler:
    """The loop without its process around it, so tests can run it against any `EventLog`."""
    return Reconciler(NAME, projection, writer, scheduler or Scheduler(), after_append=observe_assignments)


async def serve(rt: Runtime, args: argparse.Namespace) -> None:
    projection = Projection(rt.log, snapshots=rt.snapshots, snapshot_name=NAME, track_changes=True)
    scheduler = Scheduler()
    REGISTRY.register(ProjectionCollector(projection))
    REGISTRY.register(PendingCollector(scheduler))
    loop = reconciler(projection, Writer(rt.log, NAME), scheduler)
    try:
        await projection.start()
        log.info("standing by", extra={"seq": projection.state.seq, "nodes": len(projection.state.nodes)})
        await elect(rt, projection, loop.lead)
    finally:
        await projection.save_snapshot()
        await projection.stop()
