"""`shoal scheduler` / `python -m services.scheduler`."""

from __future__ import annotations

from collections.abc import Sequence

from services.kernel.process import run
from services.scheduler.service import NAME, add_args, serve


def main(argv: Sequence[str] | None = None) -> None:
    run(NAME, serve, add_args, argv, description="Assign waiting tasks to nodes with Swarm's filters and spread.")


if __name__ == "__main__":
    main()
