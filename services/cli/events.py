"""`shoal events`: the audit tail. Every entry of the event log (not only what Docker's `/events`
can express), as JSON lines for tools or a table for people, from a sequence or time, optionally
following new entries as they are appended.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from services.cli.client import add_api_arg, json_lines, run

KEYS = ("type", "actor", "service", "node", "task")
COLUMNS = (("SEQ", 8), ("TIME", 30), ("ACTOR", 31), ("EVENT", 24), ("OBJECT", 0))
"""ACTOR fits `agent:<node id>`; TIME fits RFC 3339 with nanoseconds."""
_OBJECT_FIELDS = ("ServiceID", "NodeID", "TaskID")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="shoal events", description=__doc__)
    add_api_arg(p)
    p.add_argument("--since", default="", metavar="SEQ|TIME", help="first entry: a sequence or an RFC 3339 time")
    p.add_argument("--until", default="", metavar="SEQ|TIME", help="last entry: a sequence or an RFC 3339 time")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing entries as they are appended")
    p.add_argument("--filter", action="append", default=[], type=_filter, metavar="KEY=VALUE",
                   help=f"only entries that match; keys {', '.join(KEYS)} (repeat a key for any of its values)")
    p.add_argument("--format", choices=("json", "table"), default="json", help="JSON lines (default) or a table")
    return p.parse_args(argv)


def _filter(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or key not in KEYS or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE with KEY one of {', '.join(KEYS)}")
    return key, value


def query(args: argparse.Namespace) -> dict[str, str]:
    params = {k: v for k, v in (("since", args.since), ("until", args.until)) if v}
    if args.follow:
        params["follow"] = "1"
    if args.filter:
        wanted: dict[str, dict[str, bool]] = {}
        for key, value in args.filter:
            wanted.setdefault(key, {})[value] = True
        params["filters"] = json.dumps(wanted)
    return params


def header() -> str:
    return _line([name for name, _ in COLUMNS])


def row(line: dict[str, Any]) -> str:
    """One log entry as a table row; an entry the api could not decode says so."""
    entry = line.get("Entry")
    if not isinstance(entry, dict):
        return _line([str(line.get("Seq", "")), "", "", "(undecodable)", str(line.get("Subject", ""))])
    event = entry.get("Event") or {}
    return _line([str(line.get("Seq", "")), str(entry.get("Time", "")), str(entry.get("Actor", "")),
                  str(event.get("Type", "")), _object(event)])


def _object(event: dict[str, Any]) -> str:
    """What the event is about: its service, node or task ids (a task's from the task it carries)."""
    task = event.get("Task") if isinstance(event.get("Task"), dict) else {}
    ids = [f"{field.removesuffix('ID').lower()}={event[field]}" for field in _OBJECT_FIELDS if event.get(field)]
    if task and task.get("ID"):
        ids.append(f"task={task['ID']}")
    return " ".join(ids) or str(event.get("ClusterID", ""))


def _line(cells: list[str]) -> str:
    """Fixed widths, so rows line up while they stream; a longer cell still keeps a space after it."""
    return " ".join(cell.ljust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True))


async def tail(args: argparse.Namespace) -> None:
    if args.format == "table":
        print(header(), flush=True)
    async for line in json_lines(args.api, "/shoal/events", query(args)):
        text = row(line) if args.format == "table" else json.dumps(line, separators=(",", ":"))
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> None:
    run(tail(parse(argv)))
