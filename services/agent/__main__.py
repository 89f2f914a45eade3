"""`python -m services.agent`: one agent process (one node, or many simulated ones)."""

from __future__ import annotations

from collections.abc import Sequence

from services.agent.agent import serve
from services.agent.config import add_args
from services.kernel.process import run


def main(argv: Sequence[str] | None = None) -> None:
    run("agent", serve, add_args, argv,
        description="Shoal agent: joins the cluster, runs its node's tasks and reports their states.")


if __name__ == "__main__":
    main()
