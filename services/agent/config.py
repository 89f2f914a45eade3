"""The agent's flags, each with a `SHOAL_*` environment default (flags win, as everywhere in Shoal)."""

from __future__ import annotations

import argparse
import socket
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from services.kernel import eventloop
from services.kernel.config import env
from services.kernel.placement import generic

EXECUTORS = ("process", "sim", "docker")
INGRESS_MODES = ("auto", "proxy", "kernel")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` as a dict; a key without `=` gets an empty value, as `docker node update --label-add k`."""
    out: dict[str, str] = {}
    for item in text.split(","):
        key, _, value = item.strip().partition("=")
        if key:
            out[key] = value
    return out


def memory_bytes(text: str) -> int:
    """`512M`, `8g`, `8GiB` or plain bytes, in binary units as `docker run --memory` reads them."""
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    number, unit = (t[:-1], t[-1]) if t and t[-1] in _UNITS and t[-1].isalpha() else (t, "")
    try:
        return int(float(number) * _UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a memory size: {text!r}") from None


def generic_resource(text: str) -> str:
    """One `kind=value` item, checked now so a typo stops the agent before it joins."""
    try:
        generic.parse([text])
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text.strip()


def _generic_from_env() -> list[str]:
    return [generic_resource(i) for i in env("SHOAL_AGENT_GENERIC_RESOURCES", "").split(",") if i.strip()]


def add_args(parser: argparse.ArgumentParser) -> None:
    default_dir = Path(platformdirs.user_data_dir("shoal")) / "agent"
    parser.add_argument("--state-dir", type=Path, default=Path(env("SHOAL_AGENT_STATE_DIR", str(default_dir))),
                        help="node id, task records and task logs; one per agent (env SHOAL_AGENT_STATE_DIR)")
    parser.add_argument("--executor", choices=EXECUTORS, default=env("SHOAL_EXECUTOR", "process"),
                        help="how tasks run (env SHOAL_EXECUTOR)")
    parser.add_argument("--engine", default=env("SHOAL_DOCKER_HOST", "unix:///var/run/docker.sock"),
                        help="docker only: the engine to run containers on (env SHOAL_DOCKER_HOST; DOCKER_HOST "
                             "is deliberately ignored, operators point it at Shoal's own API)")
    parser.add_argument("--addr", default=env("SHOAL_AGENT_ADDR", "127.0.0.1"),
                        help="this node's address, shown as Status.Addr (env SHOAL_AGENT_ADDR)")
    parser.add_argument("--hostname", default=env("SHOAL_AGENT_HOSTNAME", socket.gethostname()),
                        help="node hostname; sim nodes get -1, -2, ... appended (env SHOAL_AGENT_HOSTNAME)")
    parser.add_argument("--token", default=env("SHOAL_JOIN_TOKEN", ""),
                        help="join token for the first join; the node's role is the token's "
                             "(`docker swarm join-token -q worker|manager`; env SHOAL_JOIN_TOKEN)")
    parser.add_argument("--token-file", type=Path, default=_path(env("SHOAL_JOIN_TOKEN_FILE", "")),
                        help="read the join token from this file, waiting for it to exist "
                             "(env SHOAL_JOIN_TOKEN_FILE)")
    parser.add_argument("--labels", type=labels, default=labels(env("SHOAL_AGENT_LABELS", "")),
                        help="node labels k=v,... on first join (env SHOAL_AGENT_LABELS)")
    parser.add_argument("--generic-resource", dest="generic_resources", action="append", type=generic_resource,
                        help="advertise a generic resource, repeatable: kind=count (gpu=2) or kind=name "
                             "(gpu=GPU-4f2a, one unit each), as dockerd's --node-generic-resource; for every "
                             "sim node of this process (env SHOAL_AGENT_GENERIC_RESOURCES, comma-separated)")
    parser.add_argument("--heartbeat", type=float, default=float(env("SHOAL_HEARTBEAT", "1.0")),
                        help="seconds between heartbeats (env SHOAL_HEARTBEAT)")
    parser.add_argument("--nodes", type=int, default=int(env("SHOAL_SIM_NODES", "1")),
                        help="sim only: simulated nodes hosted by this process (env SHOAL_SIM_NODES)")
    parser.add_argument("--sim-start-latency", type=float, default=float(env("SHOAL_SIM_START_LATENCY", "0")),
                        help="sim only: seconds a task takes to start (env SHOAL_SIM_START_LATENCY)")
    parser.add_argument("--sim-failure-rate", type=float, default=float(env("SHOAL_SIM_FAILURE_RATE", "0")),
                        help="sim only: fraction of started tasks that exit 1 (env SHOAL_SIM_FAILURE_RATE)")
    parser.add_argument("--sim-cpus", type=float, default=float(env("SHOAL_SIM_CPUS", "4")),
                        help="sim only: CPUs each simulated node advertises (env SHOAL_SIM_CPUS)")
    parser.add_argument("--sim-memory", type=memory_bytes, default=memory_bytes(env("SHOAL_SIM_MEMORY", "8G")),
                        help="sim only: memory each simulated node advertises, e.g. 8G (env SHOAL_SIM_MEMORY)")
    parser.add_argument("--ingress", choices=("auto", "on", "off"), default=env("SHOAL_INGRESS", "auto"),
                        help="listen on ingress-published ports on --addr (the routing mesh); auto: on "
                             "unless --executor sim (env SHOAL_INGRESS)")
    parser.add_argument("--ingress-mode", choices=INGRESS_MODES, default=env("SHOAL_INGRESS_MODE", "auto"),
                        help="kernel: nftables DNAT rules forward, at a fraction of the CPU, needs root and nft; "
                             "proxy: the agent forwards (retries a refusing backend at once, counts bytes relayed); "
                             "auto: kernel where the agent can, else proxy (docs/routing-mesh.md; "
                             "env SHOAL_INGRESS_MODE)")
    parser.add_argument("--event-loop", choices=eventloop.CHOICES, default=eventloop.default(),
                        help="uvloop (the default where installed) forwards mesh traffic with less CPU than "
                             "asyncio's own loop (env SHOAL_EVENT_LOOP)")


def _path(text: str) -> Path | None:
    return Path(text) if text else None


@dataclass(frozen=True)
class AgentConfig:
    state_dir: Path
    executor: str
    engine: str
    addr: str
    hostname: str
    labels: dict[str, str]
    heartbeat_s: float
    nodes: int
    sim_start_latency_s: float
    sim_failure_rate: float
    sim_cpus: float
    sim_memory_bytes: int
    token: str = ""
    """Needed only for a node's first join: a node already in the log rejoins without one."""
    token_file: Path | None = None
    generic_resources: tuple[str, ...] = ()
    """Advertised on every node of this agent (`kind=count` or `kind=name`), over what the engine reports."""
    ingress: bool = False
    ingress_mode: str = "auto"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AgentConfig:
        if args.nodes < 1 or (args.nodes > 1 and args.executor != "sim"):
            raise ValueError("--nodes N > 1 needs --executor sim: only simulated nodes share a process")
        if args.ingress_mode not in INGRESS_MODES:  # SHOAL_INGRESS_MODE is not checked by argparse's choices
            raise SystemExit(f"unknown ingress mode {args.ingress_mode!r}: use one of {', '.join(INGRESS_MODES)}")
        return cls(
            state_dir=args.state_dir,
            executor=args.executor,
            engine=args.engine,
            addr=args.addr,
            hostname=args.hostname,
            token=args.token,
            token_file=args.token_file,
            labels=args.labels,
            generic_resources=tuple(args.generic_resources if args.generic_resources is not None
                                    else _generic_from_env()),
            heartbeat_s=args.heartbeat,
            nodes=args.nodes,
            sim_start_latency_s=args.sim_start_latency,
            sim_failure_rate=args.sim_failure_rate,
            sim_cpus=args.sim_cpus,
            sim_memory_bytes=args.sim_memory,
            ingress=args.ingress == "on" or (args.ingress == "auto" and args.executor != "sim"),
            ingress_mode=args.ingress_mode,
        )
