"""Node liveness from heartbeats (issue 3, swarm-behaviour 2.7): down after the grace, ready when heard."""

from __future__ import annotations

import msgspec
import pytest

from schemas.cluster import DispatcherConfig, SwarmSpec
from schemas.events import ClusterCreated, ClusterSpecUpdated
from schemas.heartbeat import Heartbeat
from services.kernel.reconcile import Decide, combine
from services.orchestrator.decide import Orchestrator, Settings
from services.orchestrator.liveness import DOWN_MESSAGE, Liveness
from services.orchestrator.metrics import HEARTBEATS_UNREADABLE
from tests.world import SECOND, World, summary


def beat(*nodes: str, period: float = 1.0) -> bytes:
    return msgspec.json.encode(Heartbeat(nodes=list(nodes), period=period))


def cluster(*nodes: str) -> tuple[World, Liveness]:
    w = World()
    for n in nodes:
        w.node(n)
    return w, Liveness(started_ns=w.now)


def check(w: World, liveness: Liveness) -> list[tuple[str, ...]]:
    decision = w.decide(liveness.decide, services=set(), nodes=set())
    w.apply(decision)
    return summary(decision, w.state)


def test_timers_start_fresh_when_the_process_starts() -> None:
    w, liveness = cluster("n1")
    w.tick(2.9)
    decision = w.decide(liveness.decide, services=set(), nodes=set())
    assert decision.intents == [] and w.timers_ms(decision) == [100]


def test_timers_start_fresh_when_the_process_becomes_leader() -> None:
    """A standby may have been cut off itself: what it heard before leading does not count."""
    w, liveness = cluster("n1")
    liveness.observe(beat("n1"), w.now)
    w.tick(10)
    liveness.restart(w.now)
    w.tick(2.9)
    decision = w.decide(liveness.decide, services=set(), nodes=set())
    assert decision.intents == [] and w.timers_ms(decision) == [100]
    w.tick(0.1)
    assert check(w, liveness) == [("node", "n1", "down")]


def test_a_node_silent_past_three_periods_is_marked_down() -> None:
    w, liveness = cluster("n1", "n2")
    w.tick(2)
    liveness.observe(beat("n2"), w.now)
    w.tick(1)
    assert check(w, liveness) == [("node", "n1", "down")]
    assert w.state.nodes["n1"].status.message == DOWN_MESSAGE
    assert check(w, liveness) == []


def test_a_down_node_heard_from_again_is_ready() -> None:
    w, liveness = cluster("n1")
    w.tick(3)
    check(w, liveness)
    liveness.observe(beat("n1"), w.now)
    assert check(w, liveness) == [("node", "n1", "ready")]


def test_a_down_node_not_heard_since_start_stays_down() -> None:
    w, liveness = cluster("n1")
    w.node_status("n1", "down")
    assert check(w, liveness) == []


def test_grace_follows_the_period_each_agent_announces() -> None:
    w, liveness = cluster("n1")
    liveness.observe(beat("n1", period=2.0), w.now)
    w.tick(5.9)
    assert check(w, liveness) == []
    w.tick(0.1)
    assert check(w, liveness) == [("node", "n1", "down")]


def test_a_fixed_grace_overrides_the_period() -> None:
    w = World()
    w.node("n1")
    liveness = Liveness(started_ns=w.now, grace_s=10)
    liveness.observe(beat("n1", period=1.0), w.now)
    w.tick(9)
    assert check(w, liveness) == []


def test_one_heartbeat_speaks_for_every_node_a_sim_agent_hosts() -> None:
    w, liveness = cluster("n1", "n2", "n3")
    w.tick(2)
    assert liveness.observe(beat("n1", "n2", "n3"), w.now) == ["n1", "n2", "n3"]
    w.tick(2)
    assert check(w, liveness) == []


def test_an_unreadable_heartbeat_is_counted_and_ignored() -> None:
    w, liveness = cluster("n1")
    before = HEARTBEATS_UNREADABLE._value.get()
    assert liveness.observe(b"{not json", w.now) == []
    assert HEARTBEATS_UNREADABLE._value.get() == before + 1


def test_a_node_marked_down_has_its_replicated_tasks_replaced() -> None:
    w, liveness = cluster("n1", "n2")
    sid = w.service("web", replicas=2)
    both: Decide = combine(Orchestrator(Settings()), liveness.decide)
    w.apply(w.decide(both))
    w.run_all(sid, ["n1", "n2"])
    w.tick(3)
    liveness.observe(beat("n2"), w.now)
    w.apply(w.decide(both, services=set(), nodes=set()))
    replaced = summary(w.decide(both, services=set(), nodes={"n1"}), w.state)
    assert sorted(s[0] for s in replaced) == ["created", "desired"]


def test_a_listener_behind_on_its_heartbeats_marks_no_node_down_until_it_has_read_them() -> None:
    """An overloaded orchestrator: heartbeats sent before the deadline may wait unread on its
    connection. Only once everything sent until the deadline was read is a silent node down."""
    w, liveness = cluster("n1", "n2")
    liveness.heard_until(w.now)
    w.tick(3.5)  # past both deadlines; the listener confirmed nothing since the start
    decision = w.decide(liveness.decide, services=set(), nodes=set())
    assert decision.intents == [] and w.timers_ms(decision) == [250], "looked at again, not marked down"
    liveness.observe(beat("n2"), w.now)  # the backlog is read: n2 had been speaking all along
    liveness.heard_until(w.now - 400_000_000)  # a round trip sent after the deadline (3 s) is answered
    assert check(w, liveness) == [("node", "n1", "down")]


def test_silence_while_the_listener_was_disconnected_is_not_held_against_a_node() -> None:
    """Heartbeats sent while the orchestrator's connection was down are lost, not late: each node's
    silence counts again from the reconnect, with the grace it announced."""
    w, liveness = cluster("n1")
    liveness.observe(beat("n1", period=5), w.now)
    w.tick(14)
    liveness.missed_until(w.now)  # reconnected
    w.tick(14)  # 28 s since n1 was heard, 14 s since the reconnect: within its 15 s grace
    decision = w.decide(liveness.decide, services=set(), nodes=set())
    assert decision.intents == [] and w.timers_ms(decision) == [1000]
    w.tick(1)
    assert check(w, liveness) == [("node", "n1", "down")]


def recording(w: World, period_s: float) -> None:
    """The log says the cluster's heartbeat period is `period_s` (as a previous leader recorded it)."""
    w.fold(ClusterCreated(cluster_id="c1"),
           ClusterSpecUpdated(spec=SwarmSpec(dispatcher=DispatcherConfig(heartbeat_period=int(period_s * SECOND)))))


@pytest.mark.parametrize(("recorded_s", "announced_s", "heard_before_s"), [(1, 5, 4), (10, 1, 0.5)])
def test_a_new_leader_keeps_the_grace_each_agent_announced(recorded_s: float, announced_s: float,
                                                           heard_before_s: float) -> None:
    """A node this leader heard while standing by keeps the grace its agent announced: a leader change
    under load must not cut a 5 s heartbeat's 15 s grace to the default 3 s or to a shorter recorded
    period's, nor have a 1 s node dead at the takeover wait out the 30 s of another agent's recorded
    10 s period."""
    w, liveness = cluster("n1")
    recording(w, recorded_s)
    liveness.observe(beat("n1", period=announced_s), w.now)
    w.tick(heard_before_s)
    liveness.restart(w.now)
    w.tick(3 * announced_s - 0.5)
    assert check(w, liveness) == []
    w.tick(0.5)
    assert check(w, liveness) == [("node", "n1", "down")]


def test_a_down_node_heard_only_before_the_leader_changed_stays_down() -> None:
    w, liveness = cluster("n1")
    liveness.observe(beat("n1"), w.now)
    w.tick(3)
    assert check(w, liveness) == [("node", "n1", "down")]
    liveness.restart(w.now)
    w.tick(1)
    assert check(w, liveness) == [], "what it heard before leading says nothing about now"
    liveness.observe(beat("n1"), w.now)
    assert check(w, liveness) == [("node", "n1", "ready")]


def test_a_new_leader_gives_a_node_it_has_not_heard_the_grace_of_the_recorded_period() -> None:
    """Agents on a 10 s period, a leader that never heard them: down 30 s after it took over, not 3 s
    (which marked them down, and replaced their tasks, at every leader change)."""
    w, liveness = cluster("n1", "n2")
    recording(w, 10)
    w.tick(5)
    liveness.restart(w.now)
    w.tick(29)
    liveness.observe(beat("n2", period=10), w.now)
    decision = w.decide(liveness.decide, services=set(), nodes=set())
    assert decision.intents == [] and w.timers_ms(decision) == [1000]
    w.tick(1)
    assert check(w, liveness) == [("node", "n1", "down")], "a node that really died goes down within its grace"


def test_once_heard_a_node_has_the_grace_it_announces_not_the_recorded_one() -> None:
    w, liveness = cluster("n1")
    recording(w, 10)
    liveness.observe(beat("n1", period=1), w.now)
    w.tick(3)
    assert check(w, liveness) == [("node", "n1", "down")]


def test_a_fixed_grace_ignores_the_recorded_period() -> None:
    w = World()
    w.node("n1")
    recording(w, 10)
    liveness = Liveness(started_ns=w.now, grace_s=2)
    w.tick(2)
    assert check(w, liveness) == [("node", "n1", "down")]
