"""A whole Shoal cluster as separate OS processes, for integration and end-to-end tests.

It runs exactly what `shoal up` runs (the same plan and `Supervisor`), on free ports in a temporary
state dir, so a test exercises the real processes and can `kill -9` any of them. Use it as a fixture:

    @pytest.fixture
    async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
        async with local_cluster(tmp_path, agents=2, executor="sim") as c:
            yield c
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from services.agent.executors.docker import DockerExecutor
from services.agent.executors.process import ProcessExecutor
from services.agent.identity import NODE_ID_FILE
from services.cli.jointokens import write_join_tokens
from services.cli.plan import Options, plan
from services.cli.supervisor import Backoff, Supervisor, tail
from services.cli.up import port_open, prepare


@dataclass
class LocalCluster:
    options: Options
    supervisor: Supervisor

    @property
    def api_url(self) -> str:
        return self.options.api_url

    @property
    def docker_host(self) -> str:
        """What to put in `DOCKER_HOST` for the docker CLI."""
        return f"tcp://{self.options.api_addr}"

    @property
    def nats_url(self) -> str:
        return self.options.nats_url

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.supervisor.specs]

    def metrics_url(self, name: str) -> str:
        spec = next(s for s in self.supervisor.specs if s.name == name)
        return f"http://{spec.metrics_addr}/metrics"

    def log(self, name: str, lines: int = 40) -> str:
        """The tail of a process's log, for assertion messages."""
        return tail(self.supervisor.log_path(name), lines)

    async def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Kill a process as a crash would and wait until the supervisor has restarted it; its new pid."""
        old = await self.supervisor.kill(name, sig)
        return await self.supervisor.wait_running(name, other_than=old)

    async def stop_process(self, name: str) -> None:
        """Stop one process (SIGTERM) and keep it down, e.g. to change the cluster behind its back."""
        await self.supervisor.stop_process(name)

    async def start_process(self, name: str) -> int:
        await self.supervisor.start_process(name)
        return await self.supervisor.wait_running(name)

    async def wait_nodes(self, timeout_s: float = 60.0) -> None:
        """Until as many nodes are ready as the cluster has agents: a test that creates services first
        could find them all placed on the agents that joined first, or stop an agent not joined yet."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        states: list[str] = []
        async with aiohttp.ClientSession() as http:
            while states.count("ready") < self.options.agents:
                if loop.time() > deadline:
                    agents = "\n".join(self.log(n, 10) for n in self.names if n.startswith("agent"))
                    raise AssertionError(f"not every node ready within {timeout_s}s ({states}):\n{agents}")
                await asyncio.sleep(0.1)
                async with http.get(f"{self.api_url}/nodes") as r:
                    states = [n["Status"]["State"] for n in await r.json()] if r.status == 200 else []

    async def wait_api(self, timeout_s: float = 30.0) -> None:
        """Until every api instance answers (with several managers, tests use each of them)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        apis = [n for n in self.names if n.startswith("api")]
        for addr, api in zip(self.options.api_addrs, apis, strict=True):
            host, _, port = addr.rpartition(":")
            while not await port_open(host, int(port)):
                if loop.time() > deadline:
                    raise TimeoutError(f"the API at {addr} did not answer within {timeout_s}s; "
                                       f"its log:\n{self.log(api)}")
                await asyncio.sleep(0.05)


def free_ports(count: int, host: str = "127.0.0.1") -> int:
    """The first of `count` consecutive ports that are free now (the plan numbers metrics ports so),
    below Linux's ephemeral range (32768-60999) so outgoing connections cannot take them meanwhile,
    and below Swarm's published range (30000-32767), which clusters assign from."""
    low, high = _port_range()
    for _ in range(200):
        base = random.randrange(low, high - count)
        if all(_free(host, base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def _port_range() -> tuple[int, int]:
    """Each pytest-xdist worker draws from its own part of 20000-29999: a cluster's processes bind
    their ports seconds after the ports were found free, and another worker must not find them free
    meanwhile (it did: its api's port answered with another cluster's metrics)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker.removeprefix("gw")) if worker.startswith("gw") else 0
    width = 10_000 // max(count, 1)
    return 20_000 + index * width, 20_000 + (index + 1) * width


def _free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def cluster_options(state_dir: Path, agents: int = 1, executor: str = "sim", engine: str = "",
                    managers: int = 1) -> Options:
    """Options for a cluster on free ports: NATS, NATS monitoring, API, then one metrics port per process."""
    if managers > 1:
        options = _managers_options(state_dir, agents, executor, managers)
    else:
        base = free_ports(agents + 7)
        options = Options(state_dir=state_dir, agents=agents, executor=executor, api_addr=f"127.0.0.1:{base + 2}",
                          nats_port=base, nats_monitor_port=base + 1, metrics_port=base + 3, hostname="test")
    return dataclasses.replace(options, engine=engine) if engine else options


@contextlib.asynccontextmanager
async def local_cluster(state_dir: Path, agents: int = 1, executor: str = "sim", *, wait_api: bool = True,
                        options: Options | None = None, engine: str = "", managers: int = 1
                        ) -> AsyncIterator[LocalCluster]:
    """Start a cluster (or resume the one in `state_dir` when `options` repeats earlier ones); stop it after.
    With `wait_api`, it is handed over once the api answers and every agent's node is ready."""
    options = options or cluster_options(state_dir, agents, executor, engine, managers)
    prepare(options)
    supervisor = Supervisor(plan(options), options.log_dir, backoff=Backoff(initial_s=0.1, max_s=2.0),
                            stop_timeout_s=5.0)
    cluster = LocalCluster(options, supervisor)
    try:
        await supervisor.start()
        if wait_api:
            await cluster.wait_api()
            await write_join_tokens(options)
            await cluster.wait_nodes()
        yield cluster
    finally:
        await supervisor.stop()
        if options.executor == "process":
            await remove_task_processes(options)
        if options.executor == "docker":
            await remove_task_containers(options)


async def remove_task_processes(options: Options) -> None:
    """Agents leave task processes running when they stop (as Docker leaves containers), so a test
    that is done with its cluster removes them itself, through the executor that started them."""
    for i in range(1, options.agents + 1):
        executor = ProcessExecutor(options.agent_dir(i))
        for container in await executor.list():
            await executor.remove(container.task_id)
        await executor.close()



def node_ids(options: Options) -> list[str]:
    """The node ids the cluster's agents chose (each agent keeps its own in `<state dir>/node-id`)."""
    files = [options.agent_dir(i) / NODE_ID_FILE for i in range(1, options.agents + 1)]
    return [line for f in files if f.exists() for line in f.read_text().split()]


async def remove_task_containers(options: Options) -> None:
    """The docker executor's counterpart of `remove_task_processes`: every container labelled with one
    of this cluster's node ids goes, and no other (the engine is shared)."""
    executor = DockerExecutor(options.engine, node_ids(options))
    try:
        for container in await executor.list():
            await executor.remove(container.task_id)
    finally:
        await executor.close()


def _managers_options(state_dir: Path, agents: int, executor: str, managers: int) -> Options:
    """Blocks of `managers` ports each: NATS clients, monitoring, routes, APIs; then every metrics port."""
    m = managers
    base = free_ports(4 * m + 3 * m + agents + 1)  # + the audit's metrics
    return Options(state_dir=state_dir, agents=agents, executor=executor, managers=m, nats_port=base,
                   nats_monitor_port=base + m, nats_cluster_port=base + 2 * m, api_addr=f"127.0.0.1:{base + 3 * m}",
                   metrics_port=base + 4 * m, hostname="test")
