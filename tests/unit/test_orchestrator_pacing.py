"""Pacing (services/orchestrator/pacing.py): tasks for new slots are created only while fewer than
`unplaced_limit` tasks wait for the scheduler; services cut short are held and served in order."""

from __future__ import annotations

import argparse

import pytest

from schemas.events import TaskPending
from schemas.task import TaskState
from services.kernel.reconcile import Decide
from services.orchestrator.decide import Orchestrator, Settings, decide
from services.orchestrator.pacing import DEFAULT_UNPLACED_LIMIT, Pacing, unplaced
from services.orchestrator.service import add_args, settings
from tests.world import World


def created(w: World, d: Decide) -> list[str]:
    """One pass over what changed since the last, applied, as the loop runs it: only when something
    changed. The slots (or nodes, for global tasks) it created, by service."""
    services, nodes = w.state.take_touched()
    if not services and not nodes and not w.state.progressed_services:
        return []
    decision = w.decide(d, services, nodes)
    w.apply(decision)
    out = []
    for intent in decision.intents:
        task = getattr(intent.event, "task", None)
        if task is not None:
            out.append(f"{task.service_id}.{task.slot or task.node_id}")
    return out


def place(w: World, count: int, node: str = "n1") -> None:
    """The scheduler assigns the oldest `count` waiting tasks."""
    waiting = sorted((t for t in w.state.tasks.values() if t.status.state == TaskState.NEW),
                     key=lambda t: (t.created_at, t.service_id, t.slot))
    for t in waiting[:count]:
        w.assign(t.id, t.node_id or node)


def test_a_service_larger_than_the_limit_gets_the_rest_of_its_tasks_as_the_scheduler_places_them() -> None:
    w = World()
    w.node("n1")
    d = Orchestrator(Settings(unplaced_limit=4))
    sid = w.service("web", replicas=10)
    assert created(w, d) == ["web.1", "web.2", "web.3", "web.4"]
    assert unplaced(w.state) == 4
    assert created(w, d) == []  # nothing placed yet: no room
    place(w, 3)
    assert created(w, d) == ["web.5", "web.6", "web.7"]
    place(w, 10)
    assert created(w, d) == ["web.8", "web.9", "web.10"]
    place(w, 10)
    assert created(w, d) == []
    assert len(w.tasks(sid)) == 10


def test_tasks_the_scheduler_declared_pending_do_not_hold_back_the_rest() -> None:
    w = World()
    d = Orchestrator(Settings(unplaced_limit=2))
    sid = w.service("huge", replicas=5)
    assert created(w, d) == ["huge.1", "huge.2"]
    assert created(w, d) == []  # the pass after its own writes: no room
    for t in w.tasks(sid):
        w.fold(TaskPending(task_id=t.id, err="no suitable node (insufficient resources on 1 node)"))
    assert created(w, d) == ["huge.3", "huge.4"]


def test_held_services_are_served_first_held_first_before_services_created_after_them() -> None:
    w = World()
    w.node("n1")
    d = Orchestrator(Settings(unplaced_limit=3))
    w.service("a", replicas=5)
    w.service("b", replicas=2)
    assert created(w, d) == ["a.1", "a.2", "a.3"]
    w.service("c", replicas=1)
    assert created(w, d) == []  # no room: c waits behind a and b
    place(w, 3)
    assert created(w, d) == ["a.4", "a.5", "b.1"]
    place(w, 2)
    assert created(w, d) == ["b.2", "c.1"]


def test_held_services_keep_their_place_in_line_while_there_is_no_room() -> None:
    w = World()
    w.service("a", replicas=5)
    w.service("b", replicas=5)
    pacing = Pacing(room=0)
    decision = decide(w.state, set(), set(), w.now, Settings(unplaced_limit=1), pacing, held=["b", "a"])
    assert decision.intents == []
    assert list(pacing.held) == ["b", "a"]


def test_a_held_service_scaled_down_or_removed_is_no_longer_held() -> None:
    w = World()
    d = Orchestrator(Settings(unplaced_limit=2))
    w.service("a", replicas=5)
    w.service("b", replicas=5)
    assert created(w, d) == ["a.1", "a.2"]
    w.scale("a", 2)
    w.remove_service("b")
    assert created(w, d) == []
    pacing = Pacing.of(w.state, 10)
    decide(w.state, set(), set(), w.now, Settings(unplaced_limit=10), pacing, held=["a", "b"])
    assert list(pacing.held) == []


def test_replacements_are_never_held_back_but_new_slots_wait_behind_them() -> None:
    w = World()
    for n in ("n1", "n2"):
        w.node(n)
    d = Orchestrator(Settings(unplaced_limit=1))
    sid = w.service("web", replicas=4)
    for _ in range(4):
        created(w, d)
        place(w, 1)
    w.run_all(sid, ["n1"])
    w.node_status("n1", "down")
    assert len(created(w, d)) == 4
    w.service("late", replicas=1)
    assert created(w, d) == []  # the replacements wait for the scheduler, so new slots wait behind them


def test_a_global_service_starts_on_new_nodes_as_room_frees() -> None:
    w = World()
    for n in ("n1", "n2", "n3"):
        w.node(n)
    d = Orchestrator(Settings(unplaced_limit=2))
    w.service("agent", global_=True)
    assert created(w, d) == ["agent.n1", "agent.n2"]
    w.node("n4")
    assert created(w, d) == []
    place(w, 2)
    assert created(w, d) == ["agent.n3", "agent.n4"]


def test_a_limit_of_zero_creates_everything_at_once() -> None:
    w = World()
    w.service("web", replicas=2000)
    assert len(created(w, Orchestrator(Settings(unplaced_limit=0)))) == 2000


def test_the_limit_comes_from_the_flag_or_the_environment_and_a_bad_one_is_a_usage_error(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_args(parser)
    assert settings(parser.parse_args([])).unplaced_limit == DEFAULT_UNPLACED_LIMIT
    assert settings(parser.parse_args(["--unplaced-limit", "50"])).unplaced_limit == 50
    monkeypatch.setenv("SHOAL_UNPLACED_LIMIT", "0")
    parser = argparse.ArgumentParser()
    add_args(parser)
    assert settings(parser.parse_args([])).unplaced_limit == 0
    for bad in ("-1", "lots"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--unplaced-limit", bad])
        assert "expected a number of tasks, 0 or more" in capsys.readouterr().err
