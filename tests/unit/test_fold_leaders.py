"""Leadership in the fold: the newest term wins, snapshots keep it, `/info` shows it."""

from __future__ import annotations

from schemas.events import LeaderElected, LeaderWrote
from services.api.system import info_view
from services.kernel import snapshot
from tests.events import fold


def test_the_newest_term_leads_and_an_older_one_arriving_late_is_ignored() -> None:
    state = fold([LeaderElected(loop="orchestrator", term=5, holder="a/1"),
                  LeaderElected(loop="orchestrator", term=9, holder="b/2", addr="127.0.0.1:9301"),
                  LeaderElected(loop="orchestrator", term=7, holder="c/3"),
                  LeaderElected(loop="scheduler", term=2, holder="a/1"),
                  LeaderWrote(loop="orchestrator", term=9)])
    assert {loop: (leader.term, leader.holder) for loop, leader in state.leaders.items()} == {
        "orchestrator": (9, "b/2"), "scheduler": (2, "a/1")}
    assert state.stats.ignored["LeaderElected"] == 1
    assert state.stats.applied["LeaderWrote"] == 1


def test_snapshots_keep_the_leaders() -> None:
    state = fold([LeaderElected(loop="scheduler", term=3, holder="h/9", addr="127.0.0.1:1")])
    restored = snapshot.restore(snapshot.take(state))
    assert restored.leaders == state.leaders


def test_info_names_the_leader_of_each_loop() -> None:
    state = fold([LeaderElected(loop="orchestrator", term=4, holder="h/7", addr="127.0.0.1:9301")])
    leaders = info_view(state, "")["Shoal"]["Leaders"]
    assert leaders["orchestrator"].holder == "h/7" and leaders["orchestrator"].addr == "127.0.0.1:9301"
