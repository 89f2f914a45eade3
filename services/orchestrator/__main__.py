"""`shoal orchestrator` / `python -m services.orchestrator`."""

from __future__ import annotations

from collections.abc import Sequence

from services.kernel.process import run
from services.orchestrator.service import NAME, add_args, serve


def main(argv: Sequence[str] | None = None) -> None:
    run(NAME, serve, add_args, argv, description="Turn services into tasks; mark silent nodes down.")


if __name__ == "__main__":
    main()
