"""Settings every process shares, from flags with environment-variable defaults.

Flags win over the environment so a launcher can pass exact values; the environment lets an
operator configure a systemd unit or a container without editing the command line.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

DEFAULT_STREAM = "SHOAL"


def env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nats", default=env("SHOAL_NATS_URL", "nats://127.0.0.1:4222"),
                        help="NATS server URL(s), comma-separated (env SHOAL_NATS_URL)")
    parser.add_argument("--stream", default=env("SHOAL_STREAM", DEFAULT_STREAM),
                        help="JetStream stream name (env SHOAL_STREAM)")
    parser.add_argument("--replicas", type=int, default=int(env("SHOAL_REPLICAS", "1")),
                        help="stream replicas when the stream is created (env SHOAL_REPLICAS)")
    parser.add_argument("--metrics-addr", default=env("SHOAL_METRICS_ADDR", "127.0.0.1:0"),
                        help="host:port for Prometheus /metrics (env SHOAL_METRICS_ADDR; port 0 = any free port)")
    parser.add_argument("--log-level", default=env("SHOAL_LOG_LEVEL", "INFO"))
    parser.add_argument("--lease-ttl", type=int, default=int(env("SHOAL_LEASE_TTL", "1")), metavar="SECONDS",
                        help="leader lease TTL in whole seconds, orchestrator and scheduler (env SHOAL_LEASE_TTL)")


@dataclass(frozen=True)
class Common:
    servers: list[str]
    stream: str
    replicas: int
    metrics_addr: str
    log_level: str
    lease_ttl_s: int = 1

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Common:
        return cls(
            servers=[s.strip() for s in args.nats.split(",") if s.strip()],
            stream=args.stream,
            replicas=args.replicas,
            metrics_addr=args.metrics_addr,
            log_level=args.log_level,
            lease_ttl_s=args.lease_ttl,
        )
