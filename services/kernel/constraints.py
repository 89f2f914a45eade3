"""Placement constraints (`node.labels.zone==eu`), parsed and matched exactly as swarmkit does.

Shared because three processes need the same answer: the scheduler filters nodes with it, the
orchestrator decides which nodes a global service belongs on, and the API rejects malformed ones.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from schemas.node import Node

_KEY = re.compile(r"[a-z_][a-z0-9\-_.]+", re.IGNORECASE)
_VALUE = re.compile(r"[a-z0-9:\-_\s.*()?+\[\]\\^$|/]+", re.IGNORECASE)
_NODE_LABELS = "node.labels."
_ENGINE_LABELS = "engine.labels."


class ConstraintError(ValueError):
    """A constraint that does not parse; the message is swarmkit's."""


@dataclass(frozen=True, slots=True)
class Constraint:
    key: str
    equal: bool
    """`==` when true, `!=` when false."""
    value: str

    def matches(self, node: Node) -> bool:
        lowered = self.key.lower()
        if lowered == "node.ip":
            return self._matches_ip(node.status.addr)
        if lowered.startswith(_NODE_LABELS):
            return self._compare((node.spec.labels or {}).get(self.key[len(_NODE_LABELS):], ""))
        if lowered.startswith(_ENGINE_LABELS):
            return self._compare((node.description.engine.labels or {}).get(self.key[len(_ENGINE_LABELS):], ""))
        field = _FIELDS.get(lowered)
        return field is not None and self._compare(field(node))

    def _compare(self, actual: str) -> bool:
        return (actual.casefold() == self.value.casefold()) == self.equal

    def _matches_ip(self, addr: str) -> bool:
        """`==` means inside the network (or equal to the address); a malformed side never matches."""
        try:
            ip = ipaddress.ip_address(addr)
            network = ipaddress.ip_network(self.value, strict=False)
        except ValueError:
            return False
        return (ip in network) == self.equal


_FIELDS: dict[str, Callable[[Node], str]] = {
    "node.id": lambda n: n.id,
    "node.hostname": lambda n: n.description.hostname,
    "node.role": lambda n: n.spec.role,
    "node.platform.os": lambda n: n.description.platform.os or "",
    "node.platform.arch": lambda n: n.description.platform.architecture or "",
}


def parse(expr: str) -> Constraint:
    """`key==value` or `key!=value`; `==` is looked for first, as swarmkit does."""
    for op, equal in (("==", True), ("!=", False)):
        if op in expr:
            key, _, value = expr.partition(op)
            key, value = key.strip(), value.strip()
            if not _KEY.fullmatch(key):
                raise ConstraintError(f"key '{key}' is invalid")
            if not _VALUE.fullmatch(value):
                raise ConstraintError(f"value '{value}' is invalid")
            return Constraint(key, equal, value)
    raise ConstraintError("constraint expected one operator from ==, !=")


def parse_all(exprs: Sequence[str] | None) -> list[Constraint]:
    return [parse(e) for e in exprs or ()]


def match_all(constraints: Sequence[Constraint], node: Node) -> bool:
    return all(c.matches(node) for c in constraints)
