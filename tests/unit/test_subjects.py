"""The task subject layout: a literal prefix per task while it waits for a node (its compare-and-set
scope), then a literal prefix per node (what the node's agent follows)."""

from __future__ import annotations

import pytest

from services.kernel import subjects

LEAVES = ("desired", "placement", "status")


@pytest.mark.parametrize("node", ["", "n1"])
def test_a_tasks_scope_is_a_literal_prefix_holding_its_subjects_at_its_place(node: str) -> None:
    scope = subjects.task_all(node, "t1")
    assert "*" not in scope  # the server looks it up instead of matching every task's subjects
    assert all(subjects.matches(scope, subjects.task(node, "t1", leaf)) for leaf in LEAVES)
    assert not subjects.matches(scope, subjects.task(node, "t10", "status"))


def test_the_unassigned_scope_does_not_hold_the_assignment() -> None:
    """Why the fold must refuse a stale write under the unassigned prefix (test_fold.py)."""
    assert not subjects.matches(subjects.task_all("", "t1"), subjects.task("n1", "t1", "placement"))
    assert subjects.is_unassigned_task(subjects.task("", "t1", "desired"))
    assert not subjects.is_unassigned_task(subjects.task("n1", "t1", "desired"))
    assert not subjects.is_unassigned_task("shoal.evt.taskx.t1.desired")  # a token, not a prefix of one
    assert not subjects.is_unassigned_task(subjects.node("t1", "spec"))


def test_a_node_follows_only_its_own_tasks_under_a_literal_prefix() -> None:
    follows = subjects.node_tasks("n1")
    assert "*" not in follows
    assert all(subjects.matches(follows, subjects.task("n1", "t1", leaf)) for leaf in LEAVES)
    assert not subjects.matches(follows, subjects.task("", "t1", "desired"))
    assert not subjects.matches(follows, subjects.task("n2", "t1", "placement"))
    assert not subjects.matches(follows, subjects.task("n10", "t1", "placement"))
    assert not subjects.matches(follows, subjects.node("n1", "spec"))
    assert not subjects.matches(subjects.node_all("n1"), subjects.task("n1", "t1", "status"))


def test_the_node_of_a_task_subject() -> None:
    assert subjects.task_node(subjects.task("n1", "t1", "status")) == "n1"
    assert subjects.task_node(subjects.task("", "t1", "desired")) == ""
    assert subjects.task_node(subjects.node("n1", "spec")) == ""
