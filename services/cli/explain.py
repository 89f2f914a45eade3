"""`shoal explain TASK`: why the scheduler put a task where it is, or why it is still pending.

One row per node: the node the task was placed on, the other eligible nodes in the order the
scheduler ranked them (fewest tasks of the service, then fewest tasks in all, then fewest recent
failures), and every rejected node with the filter that rejected it and why.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from services.cli.client import add_api_arg, get_json, run
from services.cli.tables import short, table

HEADERS = ("NODE", "HOSTNAME", "VERDICT", "DETAIL")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="shoal explain", description=__doc__)
    add_api_arg(p)
    p.add_argument("task", metavar="TASK", help="a task id or a unique prefix of one")
    p.add_argument("--no-trunc", action="store_true", help="show whole node ids")
    return p.parse_args(argv)


def render(doc: dict[str, Any], *, trunc: bool = True) -> str:
    """The explain document (`GET /shoal/tasks/{id}/explain`) as a summary and a table."""
    ident = short if trunc else str
    slot = doc.get("Slot")
    service = f"{doc.get('ServiceName') or ''} ({doc.get('ServiceID', '')})".strip()
    summary = [
        f"Task:     {doc.get('Task', '')}",
        f"Service:  {service}" + (f", slot {slot}" if slot else ""),
        f"State:    {doc.get('State', '')}" + (f": {doc['Message']}" if doc.get("Message") else ""),
        f"Node:     {doc.get('NodeID') or '(not assigned)'}",
    ]
    nodes = sorted(doc.get("Nodes") or [], key=_order)
    rows = [(ident(str(n.get("NodeID", ""))), str(n.get("Hostname", "")), verdict(n), detail(n)) for n in nodes]
    body = table(HEADERS, rows) if rows else "(no nodes in the cluster)"
    return "\n".join(summary) + "\n\n" + body


def verdict(node: dict[str, Any]) -> str:
    if node.get("Chosen"):
        return "chosen"
    return "eligible" if node.get("Eligible") else "rejected"


def detail(node: dict[str, Any]) -> str:
    if not node.get("Eligible"):
        return ": ".join(str(part) for part in (node.get("Filter"), node.get("Reason")) if part)
    score = node.get("Score") or {}
    rank = node.get("Rank")
    return (f"rank {rank if rank is not None else '-'}: {score.get('ServiceTasks', 0)} task(s) of the service, "
            f"{score.get('TotalTasks', 0)} in all, {score.get('RecentFailures', 0)} recent failure(s)")


def _order(node: dict[str, Any]) -> tuple[int, int, str]:
    """Chosen first, then eligible nodes by rank, then rejected ones by hostname."""
    group = 0 if node.get("Chosen") else 1 if node.get("Eligible") else 2
    rank = node.get("Rank")
    return group, rank if isinstance(rank, int) else 1 << 30, str(node.get("Hostname", ""))


async def explain(args: argparse.Namespace) -> None:
    doc = await get_json(args.api, f"/shoal/tasks/{quote(args.task, safe='')}/explain")
    print(render(doc, trunc=not args.no_trunc))


def main(argv: Sequence[str] | None = None) -> None:
    run(explain(parse(argv)))
