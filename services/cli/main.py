"""`shoal <command> [args...]`: a table from command to the module whose `main(argv)` runs it.

Modules are imported only when their command runs, so `shoal up` starts without loading the API
server and a broken service cannot stop the others from launching. Adding a command is one row.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple, cast


class Command(NamedTuple):
    module: str
    help: str


COMMANDS: dict[str, Command] = {
    "up": Command("services.cli.up", "start a local cluster (NATS, api, orchestrator, scheduler, agents)"),
    "api": Command("services.api.__main__", "the Docker Engine API gateway"),
    "orchestrator": Command("services.orchestrator.__main__", "turn desired state into tasks"),
    "scheduler": Command("services.scheduler.__main__", "assign pending tasks to nodes"),
    "agent": Command("services.agent.__main__", "run one node's tasks through an executor"),
    "audit": Command("services.audit.__main__", "write every event to a JSON lines audit journal"),
    "events": Command("services.cli.events", "the audit log: every event, as JSON lines or a table (--follow)"),
    "state": Command("services.cli.state", "the cluster as it was at a log sequence or time (--at)"),
    "explain": Command("services.cli.explain", "why a task is on its node, or why it is still pending"),
}

Main = Callable[[Sequence[str] | None], None]


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {cmd.help}" for name, cmd in COMMANDS.items()]
    return "usage: shoal <command> [options]\n\ncommands:\n" + "\n".join(lines) + (
        "\n\n`shoal <command> --help` describes a command's options."
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"shoal: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    entry = cast(Main, importlib.import_module(command.module).main)
    entry(args[1:])


if __name__ == "__main__":
    main()
