"""`shoal up`: a whole local cluster as separate OS processes, kept alive until Ctrl-C or SIGTERM.

Everything lives under one state dir (NATS store, agents' node identities, logs), so running it
again on the same dir resumes the same cluster: same events, same services, same node ids.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import platformdirs

from services.cli import monitoring
from services.cli.client import ClientError
from services.cli.engine import choose, default_engine
from services.cli.jointokens import clear_join_tokens, write_join_tokens
from services.cli.plan import EXECUTORS, Options, nats_configs, plan
from services.cli.supervisor import NotReady, Supervisor
from services.kernel import logs
from services.kernel.config import DEFAULT_STREAM, env
from services.kernel.jetstream import StreamRefused, check_stream, connect
from services.kernel.process import when_jetstream_answers

log = logging.getLogger(__name__)

MAX_AGENTS = 254
"""Agent i listens on 127.0.0.i."""


class Refused(RuntimeError):
    """`shoal up` cannot start here as asked (state dir in use, port taken)."""


def parse(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="shoal up", description=__doc__)
    p.add_argument("--agents", type=_agent_count, default=1, help="agent processes, one node each (default 1)")
    p.add_argument("--executor", choices=EXECUTORS, default="",
                   help="how agents run tasks (default: docker if the engine answers, else process)")
    p.add_argument("--engine", default=default_engine(),
                   help="docker executor: the engine agents use (default SHOAL_DOCKER_HOST or the system socket; "
                        "DOCKER_HOST is ignored)")
    p.add_argument("--api-addr", default="127.0.0.1:2375", help="host:port of the Docker API (default %(default)s)")
    p.add_argument("--state-dir", type=Path, default=Path(platformdirs.user_data_dir("shoal")),
                   help="NATS store, agent identities and logs (default %(default)s)")
    p.add_argument("--nats-port", type=int, default=4222, help="NATS client port on 127.0.0.1 (default 4222)")
    p.add_argument("--nats-monitor-port", type=int, default=8222, help="NATS HTTP monitoring port, 0 = off")
    p.add_argument("--metrics-port", type=int, default=9300,
                   help="first of consecutive /metrics ports, one per process (default 9300; 0 = any free port)")
    p.add_argument("--nats-sync", default="always",
                   help="JetStream sync_interval: `always` (durable acks, default) or a duration such as 2m")
    p.add_argument("--hostname", default=socket.gethostname(), help="agents are named HOSTNAME-1, HOSTNAME-2, ...")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--monitoring", action="store_true",
                   help="also run Prometheus (Debian's package) scraping every process, with Shoal's alert rules")
    p.add_argument("--prometheus-port", type=int, default=9090, help="Prometheus port with --monitoring (default 9090)")
    p.add_argument("--managers", type=int, choices=(1, 3, 5), default=1,
                   help="manager replicas: 3 runs a 3-server JetStream cluster and 3 of each manager process")
    p.add_argument("--nats-cluster-port", type=int, default=6222,
                   help="first of the nats-servers' route ports with --managers > 1 (default 6222)")
    a = p.parse_args(argv)
    return Options(state_dir=a.state_dir.expanduser().resolve(), agents=a.agents, executor=a.executor,
                   api_addr=a.api_addr, nats_port=a.nats_port, nats_monitor_port=a.nats_monitor_port,
                   metrics_port=a.metrics_port, hostname=a.hostname, log_level=a.log_level, nats_sync=a.nats_sync,
                   monitoring=a.monitoring, prometheus_port=a.prometheus_port, engine=a.engine,
                   managers=a.managers, nats_cluster_port=a.nats_cluster_port)


def _agent_count(text: str) -> int:
    n = int(text)
    if not 0 <= n <= MAX_AGENTS:
        raise argparse.ArgumentTypeError(f"between 0 and {MAX_AGENTS}")
    return n


def prepare(options: Options) -> None:
    """Create the state dir layout and (re)write the NATS config from the current flags."""
    for d in (options.nats_dir, options.log_dir, *(options.agent_dir(i) for i in range(1, options.agents + 1))):
        d.mkdir(parents=True, exist_ok=True)
    for path, text in nats_configs(options).items():
        path.write_text(text)
    clear_join_tokens(options)


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """One `shoal up` per state dir: two would share a NATS store and agent identities."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "up.lock").open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise Refused(f"another `shoal up` (pid {f.read().strip() or '?'}) is using {state_dir}") from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        yield


def ports_in_use(options: Options) -> list[str]:
    host, _, port = options.api_addr.rpartition(":")
    wanted = [("127.0.0.1", options.nats_port), ("127.0.0.1", options.nats_monitor_port), (host, int(port))]
    wanted += [("127.0.0.1", int(s.metrics_addr.rpartition(":")[2])) for s in plan(options) if s.metrics_addr]
    if options.monitoring:
        wanted.append(("127.0.0.1", options.prometheus_port))
    for i in range(1, options.managers):
        wanted += [("127.0.0.1", options.nats_port + i), (host, int(port) + i)]
        wanted += [("127.0.0.1", options.nats_monitor_port + i)] if options.nats_monitor_port else []
    if options.managers > 1:
        wanted += [("127.0.0.1", options.nats_cluster_port + i) for i in range(options.managers)]
    return [f"{h}:{p}" for h, p in wanted if p and not _bindable(h, p)]


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


async def port_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1" if host in ("", "0.0.0.0") else host, port)
    except OSError:
        return False
    writer.close()
    return True


def banner(options: Options, supervisor: Supervisor, api_ready: bool) -> str:
    metrics = "\n".join(f"    {s.name:<13} http://{s.metrics_addr}/metrics" for s in supervisor.specs if s.metrics_addr)
    api_log = options.log_dir / ("api.log" if options.managers == 1 else "api-1.log")
    api_note = "" if api_ready else f"  (not answering yet: see {api_log})"
    apis = "".join(f"\n             http://{a}" for a in options.api_addrs[1:])
    servers = "".join(f"\n             {u}" for u in options.nats_urls[1:])
    return (
        f"Shoal is up: {options.agents} agent(s), executor {options.executor}, {options.managers} manager(s)\n"
        f"  API        {options.api_url}{api_note}{apis}\n"
        f"  NATS       {options.nats_url}{servers}\n"
        f"  state      {options.state_dir}\n"
        f"  logs       {options.log_dir}\n"
        f"  metrics\n{metrics}\n"
        + (f"  Prometheus {monitoring.prometheus_url(options)}\n" if options.monitoring else "")
        + "\n"
        f"Point the docker CLI at it:\n"
        f"  export DOCKER_HOST=tcp://{options.api_addr}\n\n"
        f"Ctrl-C stops the cluster; `shoal up --state-dir {options.state_dir}` resumes it."
    )


async def run(options: Options, out: TextIO = sys.stdout, api_wait_s: float = 30.0) -> None:
    options, why = await choose(options)
    print(why, file=out, flush=True)
    with state_lock(options.state_dir):
        if busy := ports_in_use(options):
            raise Refused(f"port(s) already in use: {', '.join(busy)} (choose others with the flags)")
        prepare(options)
        specs = plan(options)
        if options.monitoring:
            specs.append(await asyncio.to_thread(monitoring.prepare, options, specs))
        supervisor = Supervisor(specs, options.log_dir)
        serving = asyncio.ensure_future(_serve(options, supervisor, out, api_wait_s))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, serving.cancel)
        try:
            await serving
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            log.info("stopping the cluster")
            await supervisor.stop()
            log.info("cluster stopped")


async def _serve(options: Options, supervisor: Supervisor, out: TextIO, api_wait_s: float) -> None:
    """Start, say where everything is, then run until cancelled by a signal."""
    await supervisor.start()
    try:
        async with asyncio.timeout(api_wait_s):
            await _refuse_an_old_stream(options)
    except TimeoutError:  # the banner then says the api is not answering yet, and where its log is
        log.warning("JetStream not answering: the stream was not checked", extra={"waited_s": api_wait_s})
    api_ready = await _wait_port(options.api_addr, api_wait_s)
    if api_ready:
        await _hand_out_tokens(options)
    print(banner(options, supervisor, api_ready), file=out, flush=True)
    if not api_ready:  # a slow api still gets its agents their tokens when it answers
        await _wait_port(options.api_addr, math.inf)
        await _hand_out_tokens(options)
    await asyncio.get_running_loop().create_future()


async def _refuse_an_old_stream(options: Options) -> None:
    """Every process refuses a stream an earlier Shoal wrote tasks into, or one it cannot create beside
    another cluster's, and would be restarted forever behind a banner saying Shoal is up: stop with
    the processes' message instead."""
    nc = await connect(options.nats_urls, "up")
    try:
        await when_jetstream_answers(lambda: check_stream(nc, env("SHOAL_STREAM", DEFAULT_STREAM)))
    except StreamRefused as e:
        raise Refused(str(e)) from None
    finally:
        await nc.close()


async def _hand_out_tokens(options: Options) -> None:
    try:
        await write_join_tokens(options)
    except ClientError as e:
        log.error("cannot hand the agents their join tokens; new nodes will not join", extra={"error": str(e)})


async def _wait_port(addr: str, timeout_s: float) -> bool:
    host, _, port = addr.rpartition(":")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if await port_open(host, int(port)):
            return True
        await asyncio.sleep(0.1)
    return False


def main(argv: Sequence[str] | None = None) -> None:
    options = parse(argv)
    logs.setup("up", options.log_level)
    try:
        asyncio.run(run(options))
    except (Refused, NotReady, monitoring.Missing) as e:
        print(f"shoal up: {e}", file=sys.stderr)
        sys.exit(1)
