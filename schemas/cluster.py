"""The cluster's settings, shaped as Docker's `SwarmSpec` so `docker swarm inspect`, `docker info`
and `docker swarm update` read and write them as they are.

Only the settings a Shoal process obeys are kept; every other `SwarmSpec` field is Swarm's constant
(`services/api/system.py`). `None` means "never recorded": the orchestrator records its own flags the
first time it leads a cluster without them.
"""

from __future__ import annotations

import msgspec

from schemas.base import Nanos, Wire


class OrchestrationConfig(Wire):
    task_history_retention_limit: int | None = None
    """Tasks kept per slot, the live one included; negative keeps all (the orchestrator obeys it)."""


class DispatcherConfig(Wire):
    heartbeat_period: Nanos | None = None
    """The period node failure is measured in (down after 3 of them), as the orchestrator applies it."""


class SwarmSpec(Wire):
    orchestration: OrchestrationConfig = msgspec.field(default_factory=OrchestrationConfig)
    dispatcher: DispatcherConfig = msgspec.field(default_factory=DispatcherConfig)
