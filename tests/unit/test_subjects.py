"""The task subject layout: one literal prefix per task (its compare-and-set scope), one filter per node."""

from __future__ import annotations

from services.kernel import subjects


def test_a_tasks_scope_is_a_literal_prefix_covering_its_move_to_a_node() -> None:
    scope = subjects.task_all("t1")
    assert "*" not in scope  # the server looks it up instead of matching every task's subjects
    assert all(subjects.matches(scope, subjects.task(node, "t1", leaf))
               for node in ("", "n1") for leaf in ("desired", "placement", "status"))
    assert not subjects.matches(scope, subjects.task("n1", "t10", "status"))


def test_a_node_follows_only_its_own_tasks() -> None:
    assert subjects.matches(subjects.node_tasks("n1"), subjects.task("n1", "t1", "status"))
    assert not subjects.matches(subjects.node_tasks("n1"), subjects.task("", "t1", "desired"))
    assert not subjects.matches(subjects.node_tasks("n1"), subjects.task("n2", "t1", "placement"))
    assert not subjects.matches(subjects.node_tasks("n1"), subjects.node("n1", "spec"))


def test_the_node_of_a_task_subject() -> None:
    assert subjects.task_node(subjects.task("n1", "t1", "status")) == "n1"
    assert subjects.task_node(subjects.task("", "t1", "desired")) == ""
    assert subjects.task_node(subjects.node("n1", "spec")) == ""
