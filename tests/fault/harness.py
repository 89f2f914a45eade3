"""What the fault tests share: a cluster's API over plain HTTP, who leads which loop, slot checks,
and killing a process so it stays down until the test brings it back.

Every wait is on a condition with a generous deadline (`eventually`), never a sleep: the machines
these run on are shared and slow, and a fault test must fail only on wrong behaviour.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from services.cli.supervisor import Supervisor
from tests.cluster import LocalCluster
from tests.e2e.cli import eventually

__all__ = ["eventually"]

RUNNING = "running"


async def call(base: str, method: str, path: str, body: object = None, timeout_s: float = 60) -> tuple[int, Any]:
    """(status, decoded JSON body or None) of one request, whatever the status."""
    client_timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=client_timeout) as session, session.request(
            method, f"{base}{path}", json=body) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None


async def ok(base: str, method: str, path: str, body: object = None) -> Any:
    status, data = await call(base, method, path, body)
    assert status < 300, f"{method} {path}: {status} {data}"
    return data


async def create_service(base: str, name: str, replicas: int, restart_delay_ns: int | None = None) -> str:
    template: dict[str, Any] = {"ContainerSpec": {"Image": "busybox"}}
    if restart_delay_ns is not None:
        template["RestartPolicy"] = {"Delay": restart_delay_ns}
    spec = {"Name": name, "TaskTemplate": template, "Mode": {"Replicated": {"Replicas": replicas}}}
    created = await ok(base, "POST", "/services/create", spec)
    return str(created["ID"])


async def update_service(base: str, service_id: str, **changes: Any) -> int:
    """One update from the current spec (`Replicas=`, `Labels=`); the HTTP status it got."""
    service = await ok(base, "GET", f"/services/{service_id}")
    spec = service["Spec"]
    if "Replicas" in changes:
        spec["Mode"] = {"Replicated": {"Replicas": changes["Replicas"]}}
    if "Labels" in changes:
        spec["Labels"] = changes["Labels"]
    status, _ = await call(base, "POST", f"/services/{service_id}/update?version={service['Version']['Index']}", spec)
    return status


async def scale(base: str, service_id: str, replicas: int) -> None:
    async def done() -> bool:
        return await update_service(base, service_id, Replicas=replicas) == 200

    await eventually(done, 60, f"service {service_id} scaled to {replicas}")


async def tasks(base: str, service: str) -> list[dict[str, Any]]:
    filters = quote(json.dumps({"service": {service: True}}))
    found: list[dict[str, Any]] = await ok(base, "GET", f"/tasks?filters={filters}")
    return found


def running_per_slot(found: list[dict[str, Any]]) -> Counter[int]:
    """Tasks observed running, whatever they are wanted to be, by slot: 2 anywhere is the bug."""
    return Counter(t["Slot"] for t in found if t["Status"]["State"] == RUNNING)


def settled(found: list[dict[str, Any]], replicas: int, reported: bool = True) -> bool:
    """Exactly `replicas` tasks running and wanted running, each in its own slot (which slots a
    scale-down keeps depends on where tasks run, as in Swarm), none doubled; with
    `reported`, also no slot with a second task still reported running (false while a silent node's
    tasks cannot report that they stopped)."""
    live = [t for t in found if t["Status"]["State"] == RUNNING and t["DesiredState"] == RUNNING]
    per_slot = running_per_slot(found)
    return (len(live) == replicas and len({t["Slot"] for t in live}) == replicas
            and (not reported or all(n == 1 for n in per_slot.values())))


async def converge(base: str, service: str, replicas: int, timeout_s: float = 120, reported: bool = True) -> None:
    async def check() -> bool:
        return settled(await tasks(base, service), replicas, reported)

    await eventually(check, timeout_s, f"{service}: exactly {replicas} running, one per slot")


async def nodes_ready(base: str, count: int) -> None:
    async def check() -> bool:
        return bool(sum(n["Status"]["State"] == "ready" for n in await ok(base, "GET", "/nodes")) == count)

    await eventually(check, 60, f"{count} nodes ready")


@dataclass(frozen=True)
class Leader:
    name: str
    """The supervised process (`orchestrator-2`), or "" if the holder is no process we run."""
    term: int
    pid: int


async def leader(cluster: LocalCluster, loop: str, newer_than: int = 0, timeout_s: float = 60) -> Leader:
    """The loop's leader as `/info` reports it, once its term is newer than `newer_than`."""
    found: list[Leader] = []

    async def check() -> bool:
        info = await ok(cluster.api_url, "GET", "/info")
        current = info["Shoal"]["Leaders"].get(loop)
        if current is None or current["Term"] <= newer_than:
            return False
        pid = int(current["Holder"].split("/")[1])  # host/pid/nonce (kernel/lease.py holder_id)
        names = [n for n in cluster.names if n.startswith(loop) and cluster.supervisor.pid(n) == pid]
        found.append(Leader(names[0] if names else "", current["Term"], pid))
        return True

    await eventually(check, timeout_s, f"a {loop} leader with a term newer than {newer_than}")
    return found[-1]


async def kill_and_hold(supervisor: Supervisor, name: str) -> None:
    """`kill -9`, then keep it down (if the supervisor restarted it meanwhile, that one is stopped)."""
    await supervisor.kill(name, signal.SIGKILL)
    await supervisor.stop_process(name)


async def metric(url: str, name: str) -> float | None:
    """One sample of a Prometheus text exposition (`name` with its labels, as exposed)."""
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    return None
