"""Plain-text tables for the `shoal` client commands, laid out the way the docker CLI lays out its
own: upper-case headers, columns padded to the widest cell, three spaces between columns."""

from __future__ import annotations

from collections.abc import Sequence

GAP = "   "


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [GAP.join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in (headers, *rows)]
    return "\n".join(lines)


def short(object_id: str) -> str:
    """IDs as the docker CLI shows them: the first 12 characters."""
    return object_id[:12]
