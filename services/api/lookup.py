"""Finding one object from what a user typed: full id, then exact name, then unique id prefix.

This is dockerd's order. Names are case-sensitive. No match is a 404 (the CLI branches on it);
several prefix matches are a 400, as dockerd reports an ambiguous reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from schemas.node import Node
from schemas.service import Service
from schemas.task import Task
from services.api.errors import InvalidParameter, NotFound
from services.kernel.state import ClusterState


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


Obj = TypeVar("Obj", bound=_HasId)


def _find(kind: str, objects: Mapping[str, Obj], ref: str, by_name: Callable[[str], list[Obj]]) -> Obj:
    exact = objects.get(ref)
    if exact is not None:
        return exact
    matches = by_name(ref) if ref else []
    if not matches and ref:
        matches = [o for o in objects.values() if o.id.startswith(ref)]
    if not matches:
        raise NotFound(f"{kind} {ref} not found")
    if len(matches) > 1:
        raise InvalidParameter(f"{kind} {ref} is ambiguous ({len(matches)} matches found)")
    return matches[0]


def find_service(state: ClusterState, ref: str) -> Service:
    def by_name(name: str) -> list[Service]:
        service = state.services.get(state.service_by_name.get(name, ""))
        return [service] if service is not None else []

    return _find("service", state.services, ref, by_name)


def find_node(state: ClusterState, ref: str) -> Node:
    """Nodes are also found by hostname (or the name an operator gave them)."""

    def by_name(name: str) -> list[Node]:
        return [n for n in state.nodes.values() if name in (n.spec.name, n.description.hostname)]

    return _find("node", state.nodes, ref, by_name)


def find_task(state: ClusterState, ref: str) -> Task:
    return _find("task", state.tasks, ref, lambda _: [])
