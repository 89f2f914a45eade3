"""`python -m services.api`: the Docker Engine API gateway as its own process."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence

from prometheus_client import REGISTRY

from services.api.app import make_app
from services.api.bootstrap import build
from services.api.log_fetcher import LogFetcher
from services.kernel.config import env
from services.kernel.metrics import ProjectionCollector, serve
from services.kernel.process import Runtime, run

log = logging.getLogger(__name__)


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--addr", default=env("SHOAL_API_ADDR", "127.0.0.1:2375"),
                        help="host:port for the Docker Engine API (env SHOAL_API_ADDR)")
    parser.add_argument("--node-id", default=env("SHOAL_API_NODE_ID", ""),
                        help="the node this gateway speaks for: `self` and the `*` row of `docker node ls` "
                             "(env SHOAL_API_NODE_ID; default: the oldest ready manager)")


async def gateway(rt: Runtime, args: argparse.Namespace) -> None:
    api = await build(rt.log, rt.snapshots, node_id=args.node_id)
    api.logs = LogFetcher(rt.nc)
    REGISTRY.register(ProjectionCollector(api.projection))
    runner, addr = await serve(make_app(api), args.addr)
    log.info("api listening", extra={"addr": addr, "docker_host": f"tcp://{addr}"})
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await api.projection.save_snapshot()
        await api.projection.stop()


def main(argv: Sequence[str] | None = None) -> None:
    run("api", gateway, add_args, argv, description="Docker Engine API gateway (swarm subset) for Shoal")


if __name__ == "__main__":
    main()
