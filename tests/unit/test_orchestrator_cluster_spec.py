"""The cluster settings in the log: the orchestrator records what it obeys, then obeys the log."""

from __future__ import annotations

import argparse

import msgspec
import pytest

from schemas.cluster import DispatcherConfig, OrchestrationConfig, SwarmSpec
from schemas.events import ClusterCreated, ClusterSpecUpdated, NodeStatusChanged
from schemas.heartbeat import Heartbeat
from schemas.task import TaskState
from services.orchestrator import cluster_spec
from services.orchestrator.decide import DEFAULT_HISTORY_LIMIT, Settings
from services.orchestrator.liveness import Liveness
from services.orchestrator.nodes import DOWN, READY
from services.orchestrator.service import add_args, settings
from tests.unit.test_orchestrator import policy, running
from tests.world import SECOND, World


def spec(limit: int | None = None, period_ns: int | None = None) -> SwarmSpec:
    return SwarmSpec(orchestration=OrchestrationConfig(task_history_retention_limit=limit),
                     dispatcher=DispatcherConfig(heartbeat_period=period_ns))


def recorded(w: World, limit: int, period_ns: int | None) -> SwarmSpec | None:
    intents = cluster_spec.decide(w.state, limit, period_ns).intents
    if not intents:
        return None
    [intent] = intents
    assert isinstance(intent.event, ClusterSpecUpdated)
    assert intent.expect_subject == "shoal.evt.cluster"
    assert w.state.cluster is not None and intent.expect_seq == w.state.cluster.version.index
    w.fold(intent.event)
    return intent.event.spec


def test_the_first_leader_records_its_flag_and_period_then_only_period_changes() -> None:
    w = World()
    assert cluster_spec.decide(w.state, 7, SECOND).intents == []  # no cluster yet: nothing to record on
    w.fold(ClusterCreated(cluster_id="c1"))
    assert recorded(w, 7, SECOND) == spec(7, SECOND)
    assert recorded(w, 7, SECOND) is None
    assert recorded(w, 3, SECOND) is None, "a recorded limit is not overwritten by another leader's flag"
    assert recorded(w, 3, 2 * SECOND) == spec(7, 2 * SECOND)


def test_the_limit_in_the_log_wins_over_the_flag() -> None:
    w = World()
    assert cluster_spec.history_limit(w.state, 4) == 4
    w.fold(ClusterCreated(cluster_id="c1"))
    assert cluster_spec.history_limit(w.state, 4) == 4
    w.fold(ClusterSpecUpdated(spec=spec(limit=-1)))
    assert cluster_spec.history_limit(w.state, 4) == -1


def test_a_flag_the_log_overrides_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    w = World()
    w.fold(ClusterCreated(cluster_id="c1"))
    cluster_spec.warn_if_flag_ignored(w.state, 4)
    w.fold(ClusterSpecUpdated(spec=spec(limit=4)))
    cluster_spec.warn_if_flag_ignored(w.state, 4)
    assert caplog.records == [], "nothing recorded, or the same limit: nothing to say"
    cluster_spec.warn_if_flag_ignored(w.state, 9)
    [record] = caplog.records
    assert record.levelname == "WARNING" and "docker swarm update --task-history-limit N" in record.getMessage()
    assert (record.flag, record.in_force) == (9, 4)  # type: ignore[attr-defined]


def test_a_limit_changed_by_swarm_update_is_not_warned_about_when_no_flag_was_given(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_TASK_HISTORY_LIMIT", raising=False)
    parser = argparse.ArgumentParser()
    add_args(parser)
    args = parser.parse_args([])
    assert settings(args).history_limit == DEFAULT_HISTORY_LIMIT, "the cluster still starts with the default"
    w = World()
    w.fold(ClusterCreated(cluster_id="c1"))
    w.fold(ClusterSpecUpdated(spec=spec(limit=10)))  # `docker swarm update --task-history-limit 10`
    cluster_spec.warn_if_flag_ignored(w.state, args.task_history_limit)
    assert caplog.records == []


def test_history_is_pruned_to_the_limit_the_log_says() -> None:
    w, sid = running(replicas=1, template=policy(delay=0))
    w.fold(ClusterCreated(cluster_id="c1"), ClusterSpecUpdated(spec=spec(limit=2)))
    for _ in range(4):
        w.tick(2)
        task = w.live(sid)[0]
        w.run(task.id, "n1")
        w.report(task.id, TaskState.FAILED)
        w.apply(w.orchestrate(settings=Settings(history_limit=5)))
        w.apply(w.orchestrate(settings=Settings(history_limit=5)))
    assert len(w.tasks(sid)) == 2


def beat(liveness: Liveness, node: str, period_s: float, at_ns: int = 0) -> None:
    liveness.observe(msgspec.json.encode(Heartbeat(nodes=[node], period=period_s)), at_ns)


def test_heartbeat_period_is_the_longest_announced_or_a_fixed_grace_over_three() -> None:
    w = World()
    assert Liveness(0).period_ns(w.state) == SECOND, "no nodes: the agents' default"
    w.node("n1")
    w.node("n2")
    announced = Liveness(0)
    beat(announced, "n1", 1.0)
    assert announced.period_ns(w.state) is None, "n2 not heard yet: its period is unknown"
    beat(announced, "n2", 5.0)
    beat(announced, "gone", 30.0)
    assert announced.period_ns(w.state) == 5 * SECOND, "nodes no longer in the cluster do not count"
    fixed = Liveness(0, grace_s=6.0)
    beat(fixed, "n2", 5.0)
    assert fixed.period_ns(w.state) == 2 * SECOND


def test_a_new_leader_records_the_period_once_every_live_node_is_heard_and_only_if_it_differs() -> None:
    """The log says 5 s (the agents' `--heartbeat 5`); a new leader starts, hears them, and leads again."""
    w = World()
    w.fold(ClusterCreated(cluster_id="c1"), ClusterSpecUpdated(spec=spec(7, 5 * SECOND)))
    for node in ("n1", "n2", "gone"):
        w.node(node)
    w.fold(NodeStatusChanged(node_id="gone", state=DOWN, message="heartbeat failure"))
    liveness = Liveness(0)
    assert recorded(w, 7, liveness.period_ns(w.state)) is None, "the 1 s default is never written"
    for node in ("n1", "n2"):
        w.fold(NodeStatusChanged(node_id=node, state=DOWN, message="heartbeat failure"))
    assert liveness.period_ns(w.state) is None, "all down, none ever heard: still unknown"
    for node in ("n1", "n2"):
        w.fold(NodeStatusChanged(node_id=node, state=READY, message=""))
    beat(liveness, "n1", 5.0, at_ns=1)
    beat(liveness, "n2", 5.0, at_ns=1)
    liveness.restart(10)
    assert liveness.period_ns(w.state) is None, "heard only before it led: not counted"
    beat(liveness, "n1", 5.0, at_ns=11)
    assert recorded(w, 7, liveness.period_ns(w.state)) is None
    beat(liveness, "n2", 5.0, at_ns=12)
    assert liveness.period_ns(w.state) == 5 * SECOND, "the down node is not waited for"
    assert recorded(w, 7, liveness.period_ns(w.state)) is None, "the same period as the log's: no write"
    beat(liveness, "n2", 10.0, at_ns=13)
    assert recorded(w, 7, liveness.period_ns(w.state)) == spec(7, 10 * SECOND)


def test_a_fixed_grace_is_known_without_hearing_anyone() -> None:
    w = World()
    w.node("n1")
    assert Liveness(0, grace_s=6.0).period_ns(w.state) == 2 * SECOND
