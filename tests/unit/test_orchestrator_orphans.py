"""Orphaned tasks, against swarm-behaviour 1.3 and 2.7: tasks of a node `down` for 24 h (a setting)
become `orphaned`. Each test names the rule it checks."""

from __future__ import annotations

import argparse

import pytest

from schemas.task import TaskState
from services.orchestrator.decide import Settings
from services.orchestrator.orphans import ORPHAN_AFTER_S
from services.orchestrator.service import add_args, settings
from tests.world import SECOND, World, summary

S = TaskState
HOUR = 3600


def down_with_tasks(states: list[TaskState]) -> tuple[World, list[str]]:
    """n1 holds one task per state (of a service with a replica each), then goes down; the rest moves."""
    w = World()
    w.node("n1")
    w.node("n2")
    ids = []
    for i, state in enumerate(states):
        sid = w.service(f"s{i}")
        w.apply(w.orchestrate())
        (task,) = w.tasks(sid)
        w.assign(task.id, "n1")
        if state != S.ASSIGNED:
            w.report(task.id, state)
        ids.append(task.id)
    w.node_status("n1", "down")
    w.apply(w.orchestrate())
    return w, ids


def test_default_orphan_period_is_swarms_24_hours() -> None:
    assert ORPHAN_AFTER_S == 24 * HOUR and Settings().orphan_after_ns == 24 * HOUR * SECOND


def test_tasks_of_a_node_down_24_hours_become_orphaned_keeping_their_message() -> None:
    w, (task_id,) = down_with_tasks([S.RUNNING])
    message = w.task(task_id).status.message
    w.tick(24 * HOUR - 1)
    assert [s for s in summary(w.orchestrate(nodes=["n1"]), w.state) if s[0] == "status"] == []
    w.tick(1)
    assert summary(w.orchestrate(nodes=["n1"]), w.state) == [("status", task_id, "orphaned")]
    w.apply(w.orchestrate(nodes=["n1"]))
    assert (w.task(task_id).status.state, w.task(task_id).status.message) == (S.ORPHANED, message)


def test_the_orphan_deadline_is_a_timer_from_when_the_node_went_down() -> None:
    w, _ = down_with_tasks([S.RUNNING])
    w.tick(HOUR)
    assert w.timers_ms(w.orchestrate(nodes=["n1"])) == [23 * HOUR * 1000]


@pytest.mark.parametrize(("state", "orphaned"), [(S.ASSIGNED, True), (S.PREPARING, True), (S.RUNNING, True),
                                                 (S.COMPLETE, False), (S.FAILED, False), (S.SHUTDOWN, False)])
def test_only_tasks_that_could_have_progressed_assigned_to_running_are_orphaned(state: TaskState,
                                                                                  orphaned: bool) -> None:
    w, (task_id,) = down_with_tasks([state])
    w.tick(24 * HOUR)
    got = [s for s in summary(w.orchestrate(nodes=["n1"]), w.state) if s[0] == "status"]
    assert got == ([("status", task_id, "orphaned")] if orphaned else [])


def test_a_node_back_before_the_period_keeps_its_tasks_and_its_clock_restarts() -> None:
    w, _ = down_with_tasks([S.RUNNING])
    w.tick(20 * HOUR)
    w.node_status("n1", "ready")
    w.tick(1)
    w.node_status("n1", "down")
    w.tick(10 * HOUR)
    assert [s for s in summary(w.orchestrate(nodes=["n1"]), w.state) if s[0] == "status"] == []


def test_the_period_is_a_setting() -> None:
    w, (task_id,) = down_with_tasks([S.RUNNING])
    w.tick(2)
    decision = w.orchestrate(nodes=["n1"], settings=Settings(orphan_after_ns=2 * SECOND))
    assert summary(decision, w.state) == [("status", task_id, "orphaned")]


def test_a_change_of_availability_while_down_does_not_restart_the_clock() -> None:
    w, (task_id,) = down_with_tasks([S.RUNNING])
    w.tick(12 * HOUR)
    w.node_spec("n1", availability="drain")
    w.apply(w.orchestrate())
    w.tick(12 * HOUR)
    assert ("status", task_id, "orphaned") in summary(w.orchestrate(nodes=["n1"]), w.state)


def test_orchestrator_flags_set_the_orphan_period_and_cluster_wide_rebalance() -> None:
    parser = argparse.ArgumentParser()
    add_args(parser)
    assert settings(parser.parse_args([])) == Settings()
    assert settings(parser.parse_args(["--orphan-after", "2.5", "--rebalance"])) == Settings(
        orphan_after_ns=2_500_000_000, rebalance=True)


def test_orchestrator_settings_come_from_the_environment_so_shoal_up_can_pass_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("SHOAL_ORPHAN_AFTER", "60"), ("SHOAL_REBALANCE", "1"), ("SHOAL_TASK_HISTORY_LIMIT", "2"),
                        ("SHOAL_HEARTBEAT_GRACE", "7.5")):
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    add_args(parser)
    args = parser.parse_args([])
    assert (args.orphan_after, args.rebalance, args.task_history_limit, args.heartbeat_grace) == (60.0, True, 2, 7.5)
    assert parser.parse_args(["--task-history-limit", "3"]).task_history_limit == 3, "a flag wins over the environment"
