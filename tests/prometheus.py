"""A real Prometheus (Debian's package) scraping a test cluster, and the queries Shoal ships for it.

The config is the one `shoal up --monitoring` writes, so the test checks exactly what operators get.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from services.cli.monitoring import RULES, prometheus_argv, prometheus_binary, scrape_config
from tests.apt import apt_lock
from tests.cluster import LocalCluster, free_ports

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards" / "shoal.json"
_THRESHOLD = re.compile(r"^(?P<vector>.*?)\s*(?:>=|<=|==|!=|>|<)\s*[0-9.]+$", re.DOTALL)


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p["targets"]]


async def alert_rules(url: str) -> dict[str, str]:
    """The alert rules as the running Prometheus loaded them (from deploy/prometheus/alerts.yml)."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/v1/rules") as resp:
        body = await resp.json()
    return {r["name"]: r["query"] for g in body["data"]["groups"] for r in g["rules"] if r["type"] == "alerting"}


def measured(expr: str) -> str:
    """An alert's expression without its threshold: the vector that must exist for the alert to work."""
    match = _THRESHOLD.match(expr.strip())
    return match["vector"] if match else expr


@contextlib.asynccontextmanager
async def prometheus(cluster: LocalCluster, workdir: Path) -> AsyncIterator[str]:
    """Prometheus on a free port scraping every process of `cluster` each second; its base URL."""
    config = _write_config(cluster, workdir)
    listen = f"127.0.0.1:{free_ports(1)}"
    with apt_lock():  # it installs Debian's package when missing
        binary = prometheus_binary()
    log = (workdir / "prometheus.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *prometheus_argv(binary, config, workdir / "data", listen), stdout=log, stderr=log)
    url = f"http://{listen}"
    try:
        await _ready(url, workdir / "prometheus.log")
        yield url
    finally:
        proc.terminate()
        await proc.wait()
        log.close()


def _write_config(cluster: LocalCluster, workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(scrape_config(cluster.supervisor.specs, RULES, interval="1s"))
    return config


def _tail(log: Path) -> str:
    return log.read_text()[-2000:]


async def _ready(url: str, log: Path) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/-/ready") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError(f"Prometheus did not become ready; its log:\n{_tail(log)}")


async def query(url: str, expr: str) -> list[Any]:
    async with aiohttp.ClientSession() as session, \
            session.get(f"{url}/api/v1/query", params={"query": expr}) as resp:
        body = await resp.json()
    assert body.get("status") == "success", f"{expr}: {body}"
    result: list[Any] = body["data"]["result"]
    return result


async def alerts(url: str) -> dict[str, str]:
    """Active alerts by name, with their state (pending or firing)."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/v1/alerts") as resp:
        body = await resp.json()
    return {a["labels"]["alertname"]: a["state"] for a in body["data"]["alerts"]}
