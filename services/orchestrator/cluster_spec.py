"""The cluster settings the orchestrator obeys, recorded in the log so every gateway can show them.

`--task-history-limit` is the limit a cluster starts with: the first leader of a cluster that has
none records it, and from then on the log's value is the one obeyed, changed with
`docker swarm update --task-history-limit` (Swarm's `init` sets it, `update` changes it).
The heartbeat period is a fact rather than a setting: the grace the leader applies divided by the
periods a node may miss, re-recorded only when it differs from the log's (a fixed `--heartbeat-grace`,
or agents announcing another `--heartbeat`) and only once it is known (`Liveness.period_ns`): every
write moves the cluster's version, refusing a concurrent `docker swarm update` as out of sequence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from msgspec.structs import replace

from schemas.cluster import DispatcherConfig, OrchestrationConfig, SwarmSpec
from schemas.events import ClusterSpecUpdated
from services.kernel import subjects
from services.kernel.reconcile import Decide, Decision
from services.kernel.state import ClusterState
from services.kernel.writer import Intent

log = logging.getLogger(__name__)


def recorded_limit(state: ClusterState) -> int | None:
    spec = state.cluster.spec if state.cluster is not None else None
    return spec.orchestration.task_history_retention_limit if spec is not None else None


def history_limit(state: ClusterState, default: int) -> int:
    """The log's limit once recorded, else the orchestrator's own flag."""
    limit = recorded_limit(state)
    return default if limit is None else limit


def warn_if_flag_ignored(state: ClusterState, flag: int | None) -> None:
    """Say so, once at start, when the log's limit overrides a different `--task-history-limit`:
    otherwise an operator changing the flag sees it silently ignored. `flag` None (neither the flag nor
    its environment variable given) says nothing: after `docker swarm update` every orchestrator
    start would warn about a flag nobody passed."""
    limit = recorded_limit(state)
    if flag is not None and limit is not None and limit != flag:
        log.warning("--task-history-limit ignored: the limit in the log is in force; "
                    "`docker swarm update --task-history-limit N` changes it",
                    extra={"flag": flag, "in_force": limit})


def decide(state: ClusterState, history_default: int, period_ns: int | None) -> Decision:
    """Pure: the `ClusterSpecUpdated` that makes the log say what this leader obeys, if it does not;
    `period_ns` None (not known yet) leaves the recorded period alone."""
    cluster = state.cluster
    if cluster is None:
        return Decision()
    spec = cluster.spec or SwarmSpec()
    if spec.orchestration.task_history_retention_limit is None:
        spec = replace(spec, orchestration=OrchestrationConfig(task_history_retention_limit=history_default))
    if period_ns is not None and spec.dispatcher.heartbeat_period != period_ns:
        spec = replace(spec, dispatcher=DispatcherConfig(heartbeat_period=period_ns))
    if spec == cluster.spec:
        return Decision()
    intent = Intent(ClusterSpecUpdated(spec=spec), expect_seq=cluster.version.index, expect_subject=subjects.CLUSTER)
    return Decision(intents=[intent])


def decider(history_default: int, period_ns: Callable[[ClusterState], int | None]) -> Decide:
    def bound(state: ClusterState, services: set[str], nodes: set[str], now_ns: int) -> Decision:
        return decide(state, history_default, period_ns(state))

    return bound
