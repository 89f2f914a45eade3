"""Placement constraints (swarm-behaviour section 5): swarmkit's parsing errors and matching rules."""

from __future__ import annotations

import re

import pytest

from schemas.node import Node, NodeDescription, NodeSpec, NodeStatus
from services.kernel.constraints import ConstraintError, match_all, parse, parse_all


@pytest.mark.parametrize(
    ("expr", "error"),
    [
        ("node.role=manager", "constraint expected one operator from ==, !="),
        ("node.role>manager", "constraint expected one operator from ==, !="),
        ("node labels==x", "key 'node labels' is invalid"),
        ("==x", "key '' is invalid"),
        ("node.role==man@ger", "value 'man@ger' is invalid"),
        ("node.role==", "value '' is invalid"),
    ],
)
def test_malformed_constraints_are_refused_with_swarmkit_s_message(expr: str, error: str) -> None:
    with pytest.raises(ConstraintError, match=f"^{re.escape(error)}$"):
        parse(expr)


def test_whitespace_around_the_parts_is_trimmed() -> None:
    assert parse("  node.role ==  manager ") == parse("node.role==manager")


def test_equals_is_looked_for_before_not_equals() -> None:
    with pytest.raises(ConstraintError, match=re.escape("key 'node.labels.a!=b' is invalid")):
        parse("node.labels.a!=b==c")


def node(labels: dict[str, str] | None = None, addr: str = "10.0.0.5") -> Node:
    return Node(id="n1", spec=NodeSpec(labels=labels or {}), description=NodeDescription(hostname="box"),
                status=NodeStatus(state="ready", addr=addr))


@pytest.mark.parametrize(
    ("rule", "exprs", "labels", "addr", "matches"),
    [
        ("values compare case-insensitively", ["node.hostname==BOX"], None, "10.0.0.5", True),
        ("label keys are case-sensitive", ["node.labels.zone==eu"], {"Zone": "eu"}, "10.0.0.5", False),
        ("the key prefix is not", ["NODE.LABELS.Zone==eu"], {"Zone": "eu"}, "10.0.0.5", True),
        ("a missing label is the empty string", ["node.labels.gpu!=yes"], None, "10.0.0.5", True),
        ("unknown keys never match with ==", ["node.colour==red"], None, "10.0.0.5", False),
        ("unknown keys never match with != either", ["node.colour!=red"], None, "10.0.0.5", False),
        ("node.ip equal to an address", ["node.ip==10.0.0.5"], None, "10.0.0.5", True),
        ("node.ip inside a network", ["node.ip==10.0.0.0/24"], None, "10.0.0.5", True),
        ("node.ip != outside a network", ["node.ip!=192.168.0.0/16"], None, "10.0.0.5", True),
        ("node.ip malformed never matches", ["node.ip!=not-an-ip"], None, "10.0.0.5", False),
        ("all constraints must hold", ["node.hostname==box", "node.role==manager"], None, "10.0.0.5", False),
    ],
)
def test_matching(rule: str, exprs: list[str], labels: dict[str, str] | None, addr: str, matches: bool) -> None:
    assert match_all(parse_all(exprs), node(labels, addr)) is matches, rule
