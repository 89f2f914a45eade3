"""What a node's state means for the tasks on it (swarm-behaviour 2.1, 2.7)."""

from __future__ import annotations

from schemas.node import Node
from schemas.service import TaskSpec
from services.kernel import constraints

DOWN = "down"
READY = "ready"


def is_invalid(node: Node | None) -> bool:
    """Gone, down or drained: its tasks are replaced elsewhere (`disconnected`/`unknown` are not invalid)."""
    return node is None or node.status.state == DOWN or node.spec.availability == "drain"


def takes_new_tasks(node: Node) -> bool:
    """Ready and active: a global service adds, or restarts, its task here only then (pause adds nothing)."""
    return node.status.state == READY and node.spec.availability == "active"



def wanted_constraints(spec: TaskSpec | None) -> list[constraints.Constraint]:
    """A template's placement constraints; unparseable ones are ignored, as swarmkit's orchestrators
    do (the API rejects them, so only an old or hand-written event can carry one)."""
    placement = spec.placement if spec is not None else None
    try:
        return constraints.parse_all(placement.constraints if placement else None)
    except constraints.ConstraintError:
        return []
