"""`shoal state`: the whole cluster (services, nodes, tasks, the cluster itself) as it was at a
sequence or time of the event log, or as it is now; JSON, for `jq` and diffs."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from services.cli.client import add_api_arg, get_json, run


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="shoal state", description=__doc__)
    add_api_arg(p)
    p.add_argument("--at", default="", metavar="SEQ|TIME",
                   help="a log sequence or an RFC 3339 time (default: now)")
    return p.parse_args(argv)


async def show(args: argparse.Namespace) -> None:
    document = await get_json(args.api, "/shoal/state", {"at": args.at} if args.at else None)
    print(json.dumps(document, indent=2))


def main(argv: Sequence[str] | None = None) -> None:
    run(show(parse(argv)))
