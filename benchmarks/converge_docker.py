"""How fast Shoal converges real containers on a Docker engine, against that engine's own start rate.

In one run, on one engine:

- raw: the engine creates and starts N containers (the very config the docker executor sends)
  through its API, once one after another (`docker run -d` in a loop) and once all at once (as the
  agents do); the faster of the two, before and after the Shoal part, is the limit;
- create: a local Shoal cluster (`shoal up --agents 2 --executor docker`, as separate processes)
  gets `POST /services/create` with N replicas; timed until the API shows N tasks running;
- scale: N -> N + 10, until N + 10 run;
- update: a rolling update (env change, parallelism 5, no delay, stop-first) of a 20-replica
  service, until all 20 run the new spec.

    python -m benchmarks.converge_docker --replicas 50

The engine is SHOAL_DOCKER_HOST or the system socket; the image is the test image
(`shoal-busybox:test`, built with `docker import` if missing). The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp

from schemas.service import ContainerSpec, TaskSpec
from schemas.task import Task
from services.agent.executors.docker import NODE_LABEL, create_config
from services.kernel.ids import new_id
from tests.cluster import LocalCluster, local_cluster
from tests.docker_engine import docker_engine, ensure_test_image

COMMAND = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
POLL_S = 0.1
UPDATE_REPLICAS, UPDATE_PARALLELISM, SCALE_BY = 20, 5, 10


@dataclass
class Figures:
    replicas: int
    raw_s: float = 0.0
    raw_sequential_s: float = 0.0
    raw_concurrent_s: float = 0.0
    create_s: float = 0.0
    scale_s: float = 0.0
    update_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        raw_rate = self.replicas / self.raw_s
        return {
            **asdict(self),
            "raw_per_s": round(raw_rate, 2),
            "create_per_s": round(self.replicas / self.create_s, 2),
            "scale_per_s": round(SCALE_BY / self.scale_s, 2),
            "update_per_s": round(UPDATE_REPLICAS / self.update_s, 2),
            "create_vs_raw": round(self.create_s / self.raw_s, 2),
            "goal": 1.2,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        }


async def raw_start(engine: str, image: str, count: int, concurrent: bool) -> float:
    """Seconds for the engine to create and start `count` containers; removed afterwards."""
    docker = aiodocker.Docker(url=engine)
    tasks = [Task(id=new_id(), node_id="bench-raw", service_id="bench", service_name="raw", slot=i + 1,
                  spec=TaskSpec(container_spec=ContainerSpec(image=image, command=COMMAND)))
             for i in range(count)]

    async def run(task: Task) -> None:
        created = await docker.containers.create(create_config(task), name=f"bench-raw-{task.id}")
        await created.start()

    began = time.perf_counter()
    try:
        if concurrent:
            await asyncio.gather(*(run(t) for t in tasks))
        else:
            for task in tasks:
                await run(task)
        return time.perf_counter() - began
    finally:
        mine = json.dumps({"label": [f"{NODE_LABEL}=bench-raw"]})
        for container in await docker.containers.list(all=True, filters=mine):
            await container.delete(force=True)
        await docker.close()


async def _ready_nodes(http: aiohttp.ClientSession, api: str) -> int:
    async with http.get(f"{api}/nodes") as r:
        return sum(n["Status"]["State"] == "ready" for n in await r.json())


async def _running(http: aiohttp.ClientSession, api: str, service: str, spec_env: str | None = None) -> int:
    query = json.dumps({"service": {service: True}, "desired-state": {"running": True}})
    async with http.get(f"{api}/tasks", params={"filters": query}) as r:
        tasks = await r.json()
    return sum(t["Status"]["State"] == "running"
               and (spec_env is None or spec_env in (t["Spec"]["ContainerSpec"].get("Env") or []))
               for t in tasks)


async def _until(http: aiohttp.ClientSession, api: str, service: str, count: int, began: float,
                 spec_env: str | None = None) -> float:
    return await _poll(lambda: _running(http, api, service, spec_env), count, began, f"{service} running tasks")


async def _poll(read: Callable[[], Awaitable[int]], count: int, began: float, what: str,
                timeout_s: float = 600) -> float:
    """Seconds since `began` until `read()` reaches `count`."""
    while await read() < count:
        if time.perf_counter() - began > timeout_s:
            raise TimeoutError(f"fewer than {count} {what} after {timeout_s}s")
        await asyncio.sleep(POLL_S)
    return time.perf_counter() - began


def _spec(name: str, replicas: int, image: str, env: list[str] | None = None) -> dict[str, Any]:
    return {"Name": name, "Mode": {"Replicated": {"Replicas": replicas}},
            "TaskTemplate": {"ContainerSpec": {"Image": image, "Command": COMMAND, "Env": env or []},
                             "RestartPolicy": {"Condition": "any", "Delay": 0}},
            "UpdateConfig": {"Parallelism": UPDATE_PARALLELISM, "Delay": 0, "Order": "stop-first",
                             "FailureAction": "pause", "Monitor": 1_000_000_000}}


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    async with http.post(url, json=body) as r:
        if r.status >= 300:
            raise RuntimeError(f"POST {url}: {r.status} {await r.text()}")
        return await r.json(content_type=None)


async def _update(http: aiohttp.ClientSession, api: str, name: str, spec: dict[str, Any]) -> None:
    async with http.get(f"{api}/services/{name}") as r:
        version = (await r.json())["Version"]["Index"]
    await _post(http, f"{api}/services/{name}/update?version={version}", spec)


async def shoal(cluster: LocalCluster, image: str, figures: Figures) -> None:
    api, n = cluster.api_url, figures.replicas
    async with aiohttp.ClientSession() as http:
        await _poll(lambda: _ready_nodes(http, api), cluster.options.agents, time.perf_counter(), "ready nodes")
        began = time.perf_counter()
        await _post(http, f"{api}/services/create", _spec("bench", n, image))
        figures.create_s = await _until(http, api, "bench", n, began)

        began = time.perf_counter()
        await _update(http, api, "bench", _spec("bench", n + SCALE_BY, image))
        figures.scale_s = await _until(http, api, "bench", n + SCALE_BY, began)

        await _post(http, f"{api}/services/create", _spec("roll", UPDATE_REPLICAS, image, ["V=1"]))
        await _until(http, api, "roll", UPDATE_REPLICAS, time.perf_counter())
        began = time.perf_counter()
        await _update(http, api, "roll", _spec("roll", UPDATE_REPLICAS, image, ["V=2"]))
        figures.update_s = await _until(http, api, "roll", UPDATE_REPLICAS, began, spec_env="V=2")


def table(f: Figures, engine: str) -> str:
    s = f.summary()
    return (
        f"engine {engine}, {s['cpus']} CPUs, Python {s['python']}\n"
        f"  raw engine create+start of {f.replicas}:   {f.raw_s:6.2f} s  {s['raw_per_s']:6.1f} containers/s  (limit; "
        f"one by one {f.raw_sequential_s:.2f} s, all at once {f.raw_concurrent_s:.2f} s)\n"
        f"  shoal create -> {f.replicas} running:        {f.create_s:6.2f} s  {s['create_per_s']:6.1f} tasks/s"
        f"  ({s['create_vs_raw']} x raw; goal <= 1.2)\n"
        f"  shoal scale {f.replicas} -> {f.replicas + SCALE_BY}:             {f.scale_s:6.2f} s  "
        f"{s['scale_per_s']:6.1f} tasks/s\n"
        f"  shoal rolling update of {UPDATE_REPLICAS} (par. {UPDATE_PARALLELISM}): {f.update_s:6.2f} s  "
        f"{s['update_per_s']:6.1f} tasks/s\n"
        f"reproduce: python -m benchmarks.converge_docker --replicas {f.replicas}"
    )


async def measure(replicas: int) -> tuple[Figures, str]:
    figures = Figures(replicas=replicas)
    with docker_engine() as engine:
        image = ensure_test_image(engine)
        sequential = [await raw_start(engine, image, replicas, concurrent=False)]
        concurrent = [await raw_start(engine, image, replicas, concurrent=True)]
        with tempfile.TemporaryDirectory(prefix="shoal-bench-") as state:
            async with local_cluster(Path(state), agents=2, executor="docker", engine=engine) as cluster:
                await shoal(cluster, image, figures)
        sequential.append(await raw_start(engine, image, replicas, concurrent=False))
        concurrent.append(await raw_start(engine, image, replicas, concurrent=True))
    figures.raw_sequential_s, figures.raw_concurrent_s = min(sequential), min(concurrent)
    figures.raw_s = min(figures.raw_sequential_s, figures.raw_concurrent_s)
    return figures, engine


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.converge_docker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", type=int, default=50, help="replicas of the created service (default 50)")
    args = p.parse_args(argv)
    figures, engine = asyncio.run(measure(args.replicas))
    print(table(figures, engine))
    print(json.dumps(figures.summary()))


if __name__ == "__main__":
    main()
