"""The cluster settings `docker info`, `docker swarm inspect` and `docker swarm update` see.

The values come from the cluster spec in the log, which the orchestrator obeys and records
(`services/orchestrator/cluster_spec.py`); until it has, the defaults Shoal starts with are shown.
Of the settings `docker swarm update` sends, only the task history limit can change: the heartbeat
period is the agents' `--heartbeat` (and the orchestrator's `--heartbeat-grace`), and every other
field is one Shoal has no use for, accepted and left as Swarm's constant.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from msgspec.structs import replace

from schemas.cluster import DispatcherConfig, OrchestrationConfig, SwarmSpec
from services.api.errors import InvalidParameter, invalid_argument

DEFAULT_LIMIT = 5
DEFAULT_PERIOD_NS = 1_000_000_000
"""What the orchestrator records when started without flags: a limit of 5 and the agents' 1 s period."""
T = TypeVar("T")


def in_force(spec: SwarmSpec | None) -> tuple[int, int]:
    """(task history limit, heartbeat period in ns) as the log says, the defaults where it is silent."""
    spec = spec or SwarmSpec()
    limit = spec.orchestration.task_history_retention_limit
    period = spec.dispatcher.heartbeat_period
    return (DEFAULT_LIMIT if limit is None else limit), (DEFAULT_PERIOD_NS if period is None else period)


def spec_view(spec: SwarmSpec | None, constants: dict[str, Any]) -> dict[str, Any]:
    """Swarm's constant spec with the two settings Shoal keeps replaced by the values in force."""
    limit, period = in_force(spec)
    return {**constants, "Orchestration": {"TaskHistoryRetentionLimit": limit},
            "Dispatcher": {"HeartbeatPeriod": period}}


def requested(current: SwarmSpec | None, body: dict[str, Any]) -> SwarmSpec | None:
    """The spec to record for a `POST /swarm/update` body, or None if it changes nothing Shoal keeps."""
    limit, period = in_force(current)
    asked = _part(body, "Orchestration", OrchestrationConfig).task_history_retention_limit
    asked_period = _part(body, "Dispatcher", DispatcherConfig).heartbeat_period
    if asked_period is not None and asked_period != period:
        raise invalid_argument(
            f"the heartbeat period ({period / 1e9:g}s) is each agent's `--heartbeat` and the orchestrator's "
            "`--heartbeat-grace` in Shoal; it cannot be changed with `docker swarm update --dispatcher-heartbeat`")
    if asked is None or asked == limit:
        return None
    spec = current or SwarmSpec()
    return replace(spec, orchestration=OrchestrationConfig(task_history_retention_limit=asked))


def _part(body: dict[str, Any], key: str, kind: type[T]) -> T:
    try:
        return msgspec.convert(body.get(key) or {}, kind)
    except msgspec.ValidationError as e:
        raise InvalidParameter(f"invalid request body: {e} - in `{key}`") from e
