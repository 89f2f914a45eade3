"""Prometheus metrics shared by every process, and the collector that reads a projection at scrape time.

Counting inside the fold would put a label lookup on the hottest path; instead the fold keeps plain
counters (events applied, tasks per state and per service: `ClusterState.task_tally`) and this
collector turns them (and the state) into metrics only when Prometheus asks, without walking the tasks.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from services.kernel.projection import Projection
    from services.kernel.state import ClusterState

EVENTS_APPENDED = Counter("shoal_events_appended_total", "Events this process appended to the log", ["event"])
APPEND_CONFLICTS = Counter(
    "shoal_append_conflicts_total", "Compare-and-set appends refused as stale (JetStream 10071)", ["writer", "event"]
)
RECONCILE_SECONDS = Histogram(
    "shoal_reconcile_duration_seconds", "Time for one decide-and-append pass", ["loop"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
LEADER = Gauge("shoal_leader", "1 while this process leads the loop, 0 while it stands by", ["loop"])
LEADER_CHANGES = Counter("shoal_leader_changes_total", "Times this process became the loop's leader", ["loop"])
NATS_RECONNECTS = Counter("shoal_nats_reconnects_total", "Reconnections to a NATS server")


class ProjectionCollector(Collector):
    def __init__(self, projection: Projection) -> None:
        self.projection = projection

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        p = self.projection
        state = p.state
        applied = CounterMetricFamily("shoal_events_applied", "Events folded into the projection", labels=["event"])
        for name, n in state.stats.applied.items():
            applied.add_metric([name], n)
        yield applied
        ignored = CounterMetricFamily(
            "shoal_events_ignored", "Events the fold ignored (backwards or unknown object)", labels=["event"]
        )
        for name, n in state.stats.ignored.items():
            ignored.add_metric([name], n)
        yield ignored
        yield CounterMetricFamily("shoal_events_skipped", "Corrupt or unknown entries skipped",
                                  value=state.stats.skipped)
        yield CounterMetricFamily("shoal_fold_seconds", "Time spent decoding and folding log entries",
                                  value=p.fold_seconds)
        yield GaugeMetricFamily("shoal_projection_seq", "Last log sequence applied", value=state.seq)
        yield GaugeMetricFamily("shoal_projection_lag_events", "Entries in the log not yet applied", value=p.pending)
        behind_s = (time.time_ns() - p.last_event_ns) / 1e9 if p.pending and p.last_event_ns else 0.0
        yield GaugeMetricFamily("shoal_projection_lag_seconds",
                                "Age of the newest applied entry while more are waiting (0 when caught up)",
                                value=max(behind_s, 0.0))
        tasks = GaugeMetricFamily("shoal_tasks", "Tasks by observed and desired state", labels=["state", "desired"])
        for observed, by_desired in state.task_tally.items():
            for desired, n in by_desired.items():
                if n:
                    tasks.add_metric([observed, desired], n)
        yield tasks
        nodes = GaugeMetricFamily("shoal_nodes", "Nodes by state, availability and role",
                                  labels=["state", "availability", "role"])
        for key, n in Tally((n.status.state, n.spec.availability, n.spec.role) for n in state.nodes.values()).items():
            nodes.add_metric(list(key), n)
        yield nodes
        yield GaugeMetricFamily("shoal_services", "Services", value=len(state.services))
        yield from _per_service(state)


_NONE = (0, 0)


def _per_service(state: ClusterState) -> Iterator[GaugeMetricFamily]:
    """Running against desired per service, labelled by name: the number of series is the number of
    services, which the operator chooses (as kube-state-metrics labels by deployment)."""
    running = GaugeMetricFamily("shoal_service_tasks_running", "Tasks running and meant to run, per service",
                                labels=["service"])
    desired = GaugeMetricFamily("shoal_service_tasks_desired",
                                "Tasks a service should run: its replicas, or for a global service its tasks "
                                "meant to run", labels=["service"])
    for service in state.services.values():
        mode = service.spec.mode
        replicas = mode.replicated.replicas if mode is not None and mode.replicated is not None else None
        meant, up = state.service_tasks_running.get(service.id, _NONE)
        running.add_metric([service.spec.name], up)
        desired.add_metric([service.spec.name], meant if replicas is None else replicas)
    yield running
    yield desired


async def metrics_handler(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def serve(app: web.Application, addr: str) -> tuple[web.AppRunner, str]:
    """Listen on `host:port` (port 0 = any free port) inside the event loop; the runner and bound address."""
    host, _, port = addr.rpartition(":")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or "127.0.0.1", int(port))
    await site.start()
    bound = runner.addresses[0] if runner.addresses else (host, port)
    return runner, f"{bound[0]}:{bound[1]}"


async def serve_metrics(addr: str) -> tuple[web.AppRunner, str]:
    """Serve /metrics in the event loop, not prometheus-client's thread: the collector reads live state."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    return await serve(app, addr)
