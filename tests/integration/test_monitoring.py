"""`shoal up --monitoring`: a real Prometheus scrapes every process, with the alert rules loaded;
and the scrape configs shipped in deploy/ agree with what `shoal up` runs."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.cli.monitoring import job, prometheus_binary, scrape_config
from services.cli.plan import Options, plan
from tests.apt import apt_lock
from tests.cluster import free_ports
from tests.e2e.cli import eventually
from tests.prometheus import alert_rules

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def shipped_targets(path: Path) -> dict[str, list[str]]:
    """job -> targets of a shipped prometheus.yml (the two-level layout deploy/ uses)."""
    jobs: dict[str, list[str]] = {}
    name = ""
    for line in path.read_text().splitlines():
        if found := re.match(r"\s*- job_name: (\S+)", line):
            name = found[1]
        elif found := re.match(r"\s*- targets: \[(.*)\]", line):
            jobs.setdefault(name, []).extend(t.strip().strip('"') for t in found[1].split(","))
    return jobs


def test_the_shipped_scrape_config_is_what_shoal_up_runs_by_default(tmp_path: Path) -> None:
    expected: dict[str, list[str]] = {}
    for spec in plan(Options(state_dir=tmp_path)):
        if spec.metrics_addr:
            expected.setdefault(job(spec), []).append(spec.metrics_addr)
    assert shipped_targets(DEPLOY / "prometheus.yml") == expected
    assert set(shipped_targets(DEPLOY / "prometheus-cluster.yml")) == set(expected)


def test_generated_config_has_one_job_per_kind_of_process(tmp_path: Path) -> None:
    config = json.loads(scrape_config(plan(Options(state_dir=tmp_path, agents=2, metrics_port=9500))))
    jobs = {c["job_name"]: c["static_configs"][0]["targets"] for c in config["scrape_configs"]}
    assert jobs == {"api": ["127.0.0.1:9500"], "orchestrator": ["127.0.0.1:9501"], "scheduler": ["127.0.0.1:9502"],
                    "agent": ["127.0.0.1:9503", "127.0.0.1:9504"], "audit": ["127.0.0.1:9505"]}
    assert config["rule_files"] == [str(DEPLOY / "alerts.yml")]


async def _targets(url: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/v1/targets") as resp:
        body = await resp.json()
    found: list[dict[str, Any]] = body["data"]["activeTargets"]
    return found


async def test_shoal_up_monitoring_runs_prometheus_scraping_every_process(tmp_path: Path) -> None:
    with apt_lock():
        prometheus_binary()  # installs Debian's package when root, or fails saying how to get it
    base = free_ports(10)
    prom = f"http://127.0.0.1:{base + 9}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "up", "--agents", "1", "--executor", "sim", "--monitoring",
        "--state-dir", str(tmp_path), "--nats-port", str(base), "--nats-monitor-port", str(base + 1),
        "--api-addr", f"127.0.0.1:{base + 2}", "--metrics-port", str(base + 3), "--prometheus-port", str(base + 9),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        out = ""
        async with asyncio.timeout(60):
            while "export DOCKER_HOST" not in out:
                line = await proc.stdout.readline()
                assert line, f"shoal up exited ({await proc.wait()}) before it was up:\n{out}"
                out += line.decode()
        assert f"Prometheus {prom}" in out

        async def all_up() -> bool:
            try:
                targets = await _targets(prom)
            except aiohttp.ClientError:
                return False
            return len(targets) == 5 and all(t["health"] == "up" for t in targets)

        await eventually(all_up, 60, "Prometheus scraping api, orchestrator, scheduler, agent and audit")
        assert {t["labels"]["job"] for t in await _targets(prom)} == {"api", "orchestrator", "scheduler", "agent",
                                                                       "audit"}
        assert "ShoalNodeDown" in await alert_rules(prom)
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
