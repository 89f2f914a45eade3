"""Every PromQL query Shoal ships (Grafana dashboard, alert rules) returns data from a real Prometheus
scraping a real cluster in which something is pending and a node is down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cluster import LocalCluster, local_cluster
from tests.e2e.cli import api_get, eventually
from tests.prometheus import alert_rules, alerts, dashboard_queries, measured, prometheus, query

pytestmark = pytest.mark.integration

LEADERSHIP = ("shoal_leader",)
"""Metrics of leader election (`shoal_leader{loop}`, `shoal_leader_changes_total{loop}`)."""

WEB = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}, "Mode": {"Replicated": {"Replicas": 3}}}
PINNED = {"Name": "pinned", "Mode": {"Replicated": {"Replicas": 1}},
          "TaskTemplate": {"ContainerSpec": {"Image": "busybox"},
                           "Placement": {"Constraints": ["node.labels.zone==x"]}}}


@pytest.fixture
async def scraped(tmp_path: Path) -> AsyncIterator[tuple[LocalCluster, str]]:
    async with local_cluster(tmp_path / "cluster", agents=2, executor="sim") as cluster:
        await _scenario(cluster)
        async with prometheus(cluster, tmp_path / "prometheus") as url:
            yield cluster, url


async def _scenario(cluster: LocalCluster) -> None:
    """Tasks running, one pending for a reason, one node down: every panel has something to show.
    (`local_cluster` hands the cluster over with both nodes joined: an agent stopped before it
    joins would leave no node to go down.)"""
    async with aiohttp.ClientSession() as session:
        for spec in (WEB, PINNED):
            async with session.post(f"{cluster.api_url}/v1.41/services/create", json=spec) as resp:
                assert resp.status == 201, await resp.text()

    async def started() -> bool:
        tasks: list[dict[str, Any]] = await api_get(cluster.api_url, "/tasks")
        return len([t for t in tasks if t["Status"]["State"] == "running"]) == 3

    await eventually(started, 60, "3 running tasks")
    await cluster.stop_process("agent-2")

    async def node_down() -> bool:
        return any(n["Status"]["State"] == "down" for n in await api_get(cluster.api_url, "/nodes"))

    try:
        await eventually(node_down, 60, "agent-2's node marked down")
    except AssertionError as e:
        raise AssertionError(f"{e}; the orchestrator's log:\n{cluster.log('orchestrator')}") from None


async def _without_data(url: str, queries: list[str]) -> list[str]:
    return [q for q in queries if not await query(url, q)]


async def _all_answer(url: str, queries: list[str], what: str) -> None:
    missing: list[str] = []

    async def answered() -> bool:
        missing[:] = await _without_data(url, queries)
        return not missing

    try:
        await eventually(answered, 60, what)
    except AssertionError:
        raise AssertionError(f"{what}: no data for\n  " + "\n  ".join(missing)) from None


def _leadership(expr: str) -> bool:
    return any(m in expr for m in LEADERSHIP)


async def test_every_dashboard_and_alert_query_returns_data(scraped: tuple[LocalCluster, str]) -> None:
    _, url = scraped
    rules = await alert_rules(url)
    assert {"ShoalTaskPendingTooLong", "ShoalNodeDown", "ShoalProjectionLag", "ShoalNoLeader"} <= set(rules)
    queries = [q for q in dashboard_queries() + [measured(e) for e in rules.values()] if not _leadership(q)]
    await _all_answer(url, queries, "dashboard and alert queries")

    async def raised() -> bool:
        active = await alerts(url)
        return {"ShoalTaskPendingTooLong", "ShoalNodeDown"} <= set(active)

    await eventually(raised, 30, f"pending and node-down alerts active; active: {await alerts(url)}")
    assert "ShoalProjectionLag" not in await alerts(url)


async def test_leadership_queries_return_data(scraped: tuple[LocalCluster, str]) -> None:
    """Fails until the orchestrator and scheduler export `shoal_leader{loop}` and
    `shoal_leader_changes_total{loop}` (leader election): the dashboard's leader panel and the
    ShoalNoLeader alert read them."""
    _, url = scraped
    rules = await alert_rules(url)
    queries = [q for q in dashboard_queries() + [measured(e) for e in rules.values()] if _leadership(q)]
    assert queries, "the dashboard and the alerts watch leadership"
    await _all_answer(url, queries, "leadership metrics shoal_leader{loop} and shoal_leader_changes_total{loop} "
                                    "(exported by the leader-elected orchestrator and scheduler)")
