"""Placement preferences (`spread=node.labels.dc`): which label of a node a spread level reads."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from schemas.node import Node

LabelOf = Callable[[Node], str]


def label_getter(descriptor: str) -> LabelOf | None:
    """Only node and engine labels are honoured (prefix case-insensitive); anything else is ignored."""
    lowered = descriptor.lower()
    if lowered.startswith("node.labels."):
        key = descriptor[len("node.labels."):]
        return lambda n: (n.spec.labels or {}).get(key, "")
    if lowered.startswith("engine.labels."):
        key = descriptor[len("engine.labels."):]
        return lambda n: (n.description.engine.labels or {}).get(key, "")
    return None


def levels(descriptors: Sequence[str]) -> list[LabelOf]:
    """The honoured levels, highest precedence first."""
    return [g for d in descriptors if (g := label_getter(d)) is not None]
