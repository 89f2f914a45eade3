"""How fast the whole running system places and starts tasks: creates through the api to all running.

Starts what `shoal up` starts (nats-server, api, orchestrator, scheduler) plus `--agents` sim agent
processes hosting `--nodes` simulated nodes between them (4 CPUs and 8 GiB each, each agent's nodes
labelled `zone=z<i>`), then creates `--tasks / --replicas` services through the api (concurrently,
as clients would), mixing reservations (none, 0.01 CPU, 16 MiB, both) and constraints (none,
`node.labels.zone==z<k>`, `node.labels.zone!=z<k>`). It waits until every task runs (polling the
api's `shoal_tasks` gauge), then reads the log once and reports from the events' own times:

- all assigned / all running: seconds from the first create request to the last `TaskAssigned` /
  to the last `TaskStatusChanged` to running;
- placements/s: tasks / all-assigned seconds (the whole system: api, orchestrator, scheduler);
  also over the scheduler's own window (first to last `TaskAssigned`);
- TaskCreated -> TaskAssigned latency per task, p50 and p99;
- peak resident memory (VmHWM) of every process;
- `stream_api`: round trips of the log stream's info, asked every 50 ms from the first create to
  all running, and the stream's block files at the end (`benchmarks/stream_stalls.py`): stalls
  every process waits on show here.

`--latencies FILE` writes every task's created and assigned times (seconds from the first create)
and its latency, to see whether the tail is a few stalls or the whole run.

`--unplaced-limit N` sets the orchestrator's pacing (default 200, `docs/orchestration/pacing.md`);
0 creates every task at once, as before pacing.

    .venv/bin/python -m benchmarks.schedule --nodes 1000 --tasks 100000
    .venv/bin/python -m benchmarks.schedule --nodes 100 --tasks 10000 --profile /tmp/prof   # py-spy

The last line printed is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from benchmarks.stream_stalls import blocks, probed
from schemas.codec import decode
from schemas.events import (
    Envelope,
    LeaderElected,
    NodeStatusChanged,
    TaskAssigned,
    TaskCreated,
    TaskStatusChanged,
)
from schemas.service import (
    ContainerSpec,
    Placement,
    ReplicatedService,
    ResourceReservations,
    Resources,
    ServiceMode,
    ServiceSpec,
    TaskSpec,
)
from schemas.task import TaskState
from services.cli.jointokens import write_join_tokens
from services.cli.plan import STOP_AGENTS, Options, ProcessSpec, plan
from services.cli.supervisor import Backoff, Supervisor
from services.cli.up import prepare
from services.kernel import subjects
from services.kernel.eventlog import Entry
from services.kernel.ids import parse_ns
from services.kernel.jetstream import JetStreamLog, connect
from services.orchestrator.nodes import DOWN
from services.orchestrator.pacing import DEFAULT_UNPLACED_LIMIT
from tests.cluster import LocalCluster, free_ports

MIB = 1 << 20
STREAM = "SHOAL"
CONTROL = ("nats", "api", "orchestrator", "scheduler")
_TASKS = re.compile(r"^shoal_tasks\{([^}]*)\} (\S+)$", re.MULTILINE)


def service_spec(i: int, replicas: int, zones: int) -> ServiceSpec:
    """The mix: reservations cycle over 4 kinds, constraints over 3, zones over the agents."""
    cpus, memory = [(0, 0), (10_000_000, 0), (0, 16 * MIB), (10_000_000, 16 * MIB)][i % 4]
    zone = f"z{i % zones}"
    constraints = [None, [f"node.labels.zone=={zone}"], [f"node.labels.zone!={zone}"]][i % 3]
    template = TaskSpec(
        container_spec=ContainerSpec(image="busybox", command=["sleep", "3600"]),
        resources=Resources(reservations=ResourceReservations(nano_cpus=cpus or None, memory_bytes=memory or None)),
        placement=Placement(constraints=constraints),
    )
    return ServiceSpec(name=f"s{i:05d}", mode=ServiceMode(replicated=ReplicatedService(replicas=replicas)),
                       task_template=template)


def agent_spec(options: Options, i: int, nodes: int, heartbeat_s: float) -> ProcessSpec:
    argv = (options.python, "-m", "services.agent", "--nats", options.nats_url, "--metrics-addr", "127.0.0.1:0",
            "--log-level", options.log_level, "--executor", "sim", "--nodes", str(nodes),
            "--state-dir", str(options.agent_dir(i)), "--hostname", f"sim{i}", "--labels", f"zone=z{i - 1}",
            "--heartbeat", str(heartbeat_s), "--token-file", str(options.token_file("worker")))
    return ProcessSpec(f"agent-{i}", argv, STOP_AGENTS)


@dataclass
class System:
    supervisor: Supervisor
    options: Options


@contextlib.asynccontextmanager
async def system(state_dir: Path, agents: int, nodes: int, nats_sync: str, heartbeat_s: float) -> AsyncIterator[System]:
    base = free_ports(7)
    options = Options(state_dir=state_dir, agents=0, executor="sim", api_addr=f"127.0.0.1:{base + 2}",
                      nats_port=base, nats_monitor_port=base + 1, metrics_port=base + 3, nats_sync=nats_sync)
    prepare(options)
    per_agent = [nodes // agents + (1 if i < nodes % agents else 0) for i in range(agents)]
    specs = plan(options) + [agent_spec(options, i + 1, n, heartbeat_s) for i, n in enumerate(per_agent)]
    for i in range(agents):
        options.agent_dir(i + 1).mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(specs, options.log_dir, backoff=Backoff(initial_s=0.5, max_s=5.0), stop_timeout_s=30)
    await supervisor.start()
    try:
        await LocalCluster(options, supervisor).wait_api(60)
        await write_join_tokens(options)
        yield System(supervisor, options)
    finally:
        await supervisor.stop()


async def nodes_ready(session: aiohttp.ClientSession, api: str, count: int) -> None:
    while True:
        async with session.get(f"{api}/nodes") as resp:
            nodes = await resp.json()
        if sum(n["Status"]["State"] == "ready" for n in nodes) >= count:
            return
        await asyncio.sleep(0.5)


async def create_all(session: aiohttp.ClientSession, api: str, specs: list[ServiceSpec], concurrency: int) -> int:
    """Creates in flight at once; a 503 (names are compare-and-set, concurrent creates race) is
    retried as a client would, and a 409 on a retry means the refused attempt had landed after all
    (stored, but not acknowledged in time: `LogUnavailable`). How many retries there were."""
    queue = list(reversed(specs))
    retries = 0

    async def worker() -> None:
        nonlocal retries
        while queue:
            body = msgspec.json.encode(queue.pop())
            retried = False
            while True:
                async with session.post(f"{api}/v1.41/services/create", data=body,
                                        headers={"Content-Type": "application/json"}) as resp:
                    if resp.status == 201 or (resp.status == 409 and retried):
                        break
                    if resp.status != 503:
                        raise RuntimeError(f"create failed: {resp.status} {await resp.text()}")
                retries += 1
                retried = True

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return retries


async def running_tasks(session: aiohttp.ClientSession, api: str) -> int:
    async with session.get(f"{api}/metrics") as resp:
        text = await resp.text()
    running = {'state="running"', 'desired="running"'}
    return sum(int(float(n)) for labels, n in _TASKS.findall(text) if set(labels.split(",")) == running)


def peak_rss_mb(pid: int | None) -> float:
    """VmHWM: the kernel's own high-water mark of the process's resident memory."""
    if pid is None:
        return 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds the process has used (which of them the run's CPU went to)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


@dataclass
class Times:
    created: dict[str, int] = field(default_factory=dict)
    assigned: dict[str, int] = field(default_factory=dict)
    running: dict[str, int] = field(default_factory=dict)
    events: int = 0
    nodes_down: int = 0
    """Nodes marked down during the run (each one's tasks are replaced: churn in the figures)."""
    terms: int = 0
    """`LeaderElected` entries: more than one per loop means a leader lost its lease under the load."""


async def read_log(nats_url: str) -> Times:
    """Every entry once, after the run: the events' own times, so reading costs the run nothing."""
    nc = await connect([nats_url], "benchmark")
    log = JetStreamLog(nc, STREAM)
    last = await log.last_seq()
    times = Times()
    done = asyncio.Event()

    def on_entry(entry: Entry) -> None:
        env = decode(entry.data)
        times.events += 1
        if isinstance(env, Envelope):
            ev = env.event
            if isinstance(ev, TaskCreated):
                times.created[ev.task.id] = parse_ns(env.time)
            elif isinstance(ev, TaskAssigned):
                times.assigned.setdefault(ev.task.id, parse_ns(env.time))
            elif isinstance(ev, TaskStatusChanged) and ev.status.state == TaskState.RUNNING:
                times.running.setdefault(ev.task_id, parse_ns(env.time))
            elif isinstance(ev, NodeStatusChanged) and ev.state == DOWN:
                times.nodes_down += 1
            elif isinstance(ev, LeaderElected):
                times.terms += 1
        if entry.seq >= last:
            done.set()

    following = await log.follow(subjects.ALL, 1, on_entry)
    await done.wait()
    await following.stop()
    await nc.close()
    return times


def write_latencies(path: Path, times: Times, t0_ns: int) -> None:
    """Where the tail is in time: a p99 made of a few stalls shows as runs of slow tasks created
    together; one made of the queue's depth is spread over the whole run."""
    rows = sorted((c, times.assigned[t]) for t, c in times.created.items() if t in times.assigned)
    lines = ["created_s,assigned_s,latency_ms", *(f"{(c - t0_ns) / 1e9:.3f},{(a - t0_ns) / 1e9:.3f},{(a - c) / 1e6:.1f}"
                                                 for c, a in rows)]
    path.write_text("\n".join(lines) + "\n")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


@contextlib.contextmanager
def profiled(supervisor: Supervisor, out: Path | None, names: tuple[str, ...]) -> Iterator[None]:
    """py-spy on each named process for the measured part, as collapsed stacks (`--format raw`)."""
    if out is None:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    procs = []
    for name in names:
        pid = supervisor.pid(name)
        if pid is not None:
            procs.append(subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "50", "--nonblocking",
                                           "--format", "raw", "--output", str(out / f"{name}.txt")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        yield
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(30)


def top_self(path: Path, n: int = 12) -> list[tuple[str, float]]:
    """The functions where the most samples were taken (self time), from py-spy's collapsed stacks."""
    counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        counts[leaf] = counts.get(leaf, 0) + int(count)
        total += int(count)
    return [(k, round(100 * v / total, 1)) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:n]]


@contextlib.contextmanager
def kept_logs(state_dir: Path, into: Path | None) -> Iterator[None]:
    """Copy the processes' logs out of the state directory (deleted after the run) once they have
    stopped, failed run or not: why a leader's term ended is only in its log."""
    try:
        yield
    finally:
        if into is not None:
            shutil.copytree(Options(state_dir=state_dir).log_dir, into, dirs_exist_ok=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    services = max(1, args.tasks // args.replicas)
    specs = [service_spec(i, args.replicas, args.agents) for i in range(services)]
    total = services * args.replicas
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp, kept_logs(Path(tmp), args.keep_logs):
        async with system(Path(tmp), args.agents, args.nodes, args.nats_sync, args.heartbeat) as sys_:
            sup, api = sys_.supervisor, sys_.options.api_url
            timeout = aiohttp.ClientTimeout(total=600)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                await nodes_ready(session, api, args.nodes)
                print(f"{args.nodes} nodes ready; creating {services} services x {args.replicas} replicas",
                      file=sys.stderr)
                with profiled(sup, args.profile, ("api", "orchestrator", "scheduler", "audit", "agent-1")):
                    async with probed(sys_.options.nats_url, STREAM) as stalls:
                        t0 = time.time_ns()
                        retries = await create_all(session, api, specs, args.concurrency)
                        created_s = (time.time_ns() - t0) / 1e9
                        deadline = time.monotonic() + args.timeout
                        running = 0
                        while running < total:
                            if time.monotonic() > deadline:
                                raise TimeoutError(f"{running}/{total} running after {args.timeout}s; logs in {tmp}")
                            await asyncio.sleep(0.5)
                            running = await running_tasks(session, api)
            rss = {s.name: peak_rss_mb(sup.pid(s.name)) for s in sup.specs}
            cpu = {s.name: cpu_s(sup.pid(s.name)) for s in sup.specs}
            times = await read_log(sys_.options.nats_url)
            stream = stalls.report(blocks(sys_.options.nats_dir, STREAM))
    latencies = [(times.assigned[t] - c) / 1e6 for t, c in times.created.items() if t in times.assigned]
    if args.latencies is not None:
        write_latencies(args.latencies, times, t0)
    last_assigned = max(times.assigned.values())
    all_assigned_s = (last_assigned - t0) / 1e9
    window_s = (last_assigned - min(times.assigned.values())) / 1e9
    return {
        "nodes": args.nodes, "tasks": total, "services": services, "agents": args.agents,
        "nats_sync": args.nats_sync, "heartbeat_s": args.heartbeat, "unplaced_limit": args.unplaced_limit,
        "events": times.events,
        "tasks_created": len(times.created), "nodes_marked_down": times.nodes_down,
        "leader_terms": times.terms,
        "creates_s": round(created_s, 2), "create_retries": retries,
        "all_assigned_s": round(all_assigned_s, 2),
        "all_running_s": round((max(times.running.values()) - t0) / 1e9, 2),
        "placements_per_s": round(len(times.assigned) / all_assigned_s),
        "scheduler_window_per_s": round(len(times.assigned) / window_s) if window_s else 0,
        "assign_p50_ms": round(percentile(latencies, 50), 1),
        "assign_p99_ms": round(percentile(latencies, 99), 1),
        "stream_api": stream, "peak_rss_mb": rss, "cpu_s": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--replicas", type=int, default=100, help="replicas per service")
    parser.add_argument("--agents", type=int, default=4, help="sim agent processes hosting the nodes")
    parser.add_argument("--concurrency", type=int, default=8, help="creates in flight at once")
    parser.add_argument("--nats-sync", default="2m", help="JetStream sync_interval (shoal up uses `always`)")
    parser.add_argument("--heartbeat", type=float, default=5.0,
                        help="agents' heartbeat period (Swarm's default 5 s; a node is down after 3 missed)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for all running")
    parser.add_argument("--profile", type=Path, default=None, help="write py-spy collapsed stacks here")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the processes' logs here after the run")
    parser.add_argument("--latencies", type=Path, default=None,
                        help="write each task's created time and TaskCreated -> TaskAssigned ms here (CSV)")
    parser.add_argument("--unplaced-limit", type=int, default=DEFAULT_UNPLACED_LIMIT,
                        help="the orchestrator's --unplaced-limit (docs/orchestration/pacing.md); 0: all at once")
    args = parser.parse_args()
    os.environ["SHOAL_UNPLACED_LIMIT"] = str(args.unplaced_limit)  # the processes inherit it
    result = asyncio.run(run(args))
    print(f"$ {' '.join([os.path.basename(sys.executable), '-m', 'benchmarks.schedule', *sys.argv[1:]])}")
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    for key, value in result.items():
        print(f"{key:>24}: {value}")
    if args.profile is not None:
        for name in ("api", "orchestrator", "scheduler", "audit", "agent-1"):
            path = args.profile / f"{name}.txt"
            if path.exists():
                print(f"py-spy {name}: " + ", ".join(f"{f} {p}%" for f, p in top_self(path)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
