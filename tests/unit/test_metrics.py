"""The projection collector: metrics computed from the projection only when Prometheus scrapes."""

from __future__ import annotations

from services.kernel.ids import format_ns
from services.kernel.memlog import MemoryLog
from services.kernel.metrics import ProjectionCollector
from services.kernel.projection import Projection


def _gauge(collector: ProjectionCollector, name: str) -> float:
    family = next(f for f in collector.collect() if f.name == name)
    return float(family.samples[0].value)


def test_lag_in_seconds_is_the_age_of_the_newest_applied_entry_while_behind() -> None:
    projection = Projection(MemoryLog())
    collector = ProjectionCollector(projection)
    projection.last_event_time = format_ns(1_000_000_000_000_000_000)  # 2001
    projection.pending = 3
    assert _gauge(collector, "shoal_projection_lag_seconds") > 3600
    projection.pending = 0
    assert _gauge(collector, "shoal_projection_lag_seconds") == 0
