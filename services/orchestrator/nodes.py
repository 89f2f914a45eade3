"""What a node's state means for the tasks on it (swarm-behaviour 2.1, 2.7)."""

from __future__ import annotations

from schemas.node import Node

DOWN = "down"
READY = "ready"


def is_invalid(node: Node | None) -> bool:
    """Gone, down or drained: its tasks are replaced elsewhere (`disconnected`/`unknown` are not invalid)."""
    return node is None or node.status.state == DOWN or node.spec.availability == "drain"


def takes_new_tasks(node: Node) -> bool:
    """Ready and active: a global service adds, or restarts, its task here only then (pause adds nothing)."""
    return node.status.state == READY and node.spec.availability == "active"


def is_drained(node: Node | None) -> bool:
    return node is not None and node.spec.availability == "drain"
