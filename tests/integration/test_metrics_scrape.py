"""After a scripted scenario on a real cluster, every process's /metrics says what happened."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster import LocalCluster, local_cluster
from tests.e2e.cli import api_get, eventually

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

WEB = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}, "Mode": {"Replicated": {"Replicas": 3}}}
PINNED = {"Name": "pinned", "Mode": {"Replicated": {"Replicas": 1}},
          "TaskTemplate": {"ContainerSpec": {"Image": "busybox"},
                           "Placement": {"Constraints": ["node.labels.zone==x"]}}}


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with local_cluster(tmp_path, agents=2, executor="sim") as c:
        yield c


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200, url
        text = await resp.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def test_metrics_after_a_scenario(cluster: LocalCluster) -> None:
    async with aiohttp.ClientSession() as session:
        for spec in (WEB, PINNED):
            async with session.post(f"{cluster.api_url}/v1.41/services/create", json=spec) as resp:
                assert resp.status == 201, await resp.text()

    async def settled() -> bool:
        tasks = await api_get(cluster.api_url, "/tasks")
        running = [t for t in tasks if t["Status"]["State"] == "running"]
        pending = [t for t in tasks if t["Status"]["State"] == "pending"]
        return len(running) == 3 and len(pending) == 1

    await eventually(settled, 60, "3 running tasks and 1 pending")
    every = {name: await scrape(cluster.metrics_url(name))
             for name in ("api", "orchestrator", "scheduler", "agent-1", "agent-2")}

    api = every["api"]
    assert value(api, "shoal_tasks", state="running", desired="running") == 3
    assert value(api, "shoal_tasks", state="pending", desired="running") == 1
    assert value(api, "shoal_nodes", state="ready", availability="active") == 2
    assert value(api, "shoal_service_tasks_running", service="web") == 3
    assert value(api, "shoal_service_tasks_desired", service="web") == 3
    assert value(api, "shoal_service_tasks_running", service="pinned") == 0
    assert value(api, "shoal_service_tasks_desired", service="pinned") == 1
    assert value(api, "shoal_api_requests_total", method="POST", route="/services/create", status="201") == 2
    assert value(api, "shoal_api_request_duration_seconds_count", route="/services/create") == 2

    scheduler = every["scheduler"]
    assert value(scheduler, "shoal_scheduler_pending_tasks", reason="constraints") == 1
    assert value(scheduler, "shoal_task_assign_latency_seconds_count") == 3
    assert value(scheduler, "shoal_reconcile_duration_seconds_count", loop="scheduler") > 0
    assert value(scheduler, "shoal_events_appended_total", event="TaskAssigned") == 3
    assert value(scheduler, "shoal_events_appended_total", event="TaskPending") >= 1

    orchestrator = every["orchestrator"]
    assert value(orchestrator, "shoal_events_appended_total", event="TaskCreated") == 4
    assert value(orchestrator, "shoal_reconcile_duration_seconds_count", loop="orchestrator") > 0

    agents = [every["agent-1"], every["agent-2"]]
    assert sum(value(a, "shoal_task_start_latency_seconds_count") for a in agents) == 3
    assert sum(value(a, "shoal_agent_executor_operations_total", op="start") for a in agents) == 3
    assert sum(value(a, "shoal_agent_tasks_running") for a in agents) == 3

    for name in ("api", "orchestrator", "scheduler"):
        assert value(every[name], "shoal_fold_seconds_total") > 0, name
        assert value(every[name], "shoal_events_applied_total", event="ServiceCreated") == 2, name
    for name, samples in every.items():
        assert ("shoal_fold_seconds_total", frozenset()) in samples, name
        assert ("shoal_nats_reconnects_total", frozenset()) in samples, name
        assert ("shoal_projection_lag_events", frozenset()) in samples, name
