"""`shoal audit` / `python -m services.audit`."""

from __future__ import annotations

from collections.abc import Sequence

from services.audit.service import NAME, add_args, serve
from services.kernel.process import run


def main(argv: Sequence[str] | None = None) -> None:
    run(NAME, serve, add_args, argv, description="Write every event of the log to a JSON lines audit journal.")


if __name__ == "__main__":
    main()
