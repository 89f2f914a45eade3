"""The scheduler's own metrics (the shared ones live in `services.kernel.metrics`)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from schemas.events import TaskAssigned
from services.kernel.eventlog import AppendResult, Conflict
from services.kernel.ids import parse_ns
from services.kernel.writer import Intent
from services.scheduler.decide import Scheduler

ASSIGN_LATENCY = Histogram(
    "shoal_task_assign_latency_seconds", "Time from TaskCreated to TaskAssigned",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def observe_assignments(intents: Sequence[Intent], results: Sequence[AppendResult]) -> None:
    now = time.time_ns()
    for intent, result in zip(intents, results, strict=True):
        ev = intent.event
        if isinstance(ev, TaskAssigned) and not isinstance(result, Conflict):
            try:
                ASSIGN_LATENCY.observe(max(0, now - parse_ns(ev.task.created_at)) / 1e9)
            except ValueError:
                continue


class PendingCollector(Collector):
    """Tasks waiting for a node by reason, read from the scheduler's memory at scrape time."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("shoal_scheduler_pending_tasks", "Tasks no node can take now, by reason",
                                  labels=["reason"])
        for reason, n in sorted(self.scheduler.pending().items()):
            gauge.add_metric([reason], n)
        yield gauge
