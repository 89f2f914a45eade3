"""One `service create` is one trace across the api, orchestrator, scheduler and agent processes.

The processes are the real ones `shoal up` runs, each exporting its spans over OTLP/HTTP (chosen by
the standard `OTEL_*` variables) to a collector the test runs on loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.cluster import LocalCluster, local_cluster
from tests.e2e.cli import eventually
from tests.otlp_collector import Collector, Span, otlp_collector

pytestmark = pytest.mark.integration

SPEC = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}},
        "Mode": {"Replicated": {"Replicas": 2}}}


@pytest.fixture
async def traced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[LocalCluster, Collector]]:
    async with otlp_collector() as collector:
        for key, value in collector.env().items():
            monkeypatch.setenv(key, value)
        async with local_cluster(tmp_path, agents=1, executor="sim") as cluster:
            yield cluster, collector


def _chain(span: Span, by_id: dict[str, Span]) -> list[Span]:
    """The span and its ancestors, root last."""
    chain = [span]
    while chain[-1].parent_id in by_id:
        chain.append(by_id[chain[-1].parent_id])
    return chain


async def test_service_create_is_one_trace_from_the_api_to_the_running_task(
        traced: tuple[LocalCluster, Collector]) -> None:
    cluster, collector = traced
    async with aiohttp.ClientSession() as session, \
            session.post(f"{cluster.api_url}/v1.41/services/create", json=SPEC) as resp:
        assert resp.status == 201, await resp.text()

    def request_span() -> Span | None:
        return next((s for s in collector.spans if s.service == "shoal-api" and s.name == "POST /services/create"),
                    None)

    def running() -> list[Span]:
        root = request_span()
        return [s for s in collector.spans if root is not None and s.trace_id == root.trace_id
                and s.service == "shoal-agent" and s.name == "agent running"]

    async def both_running() -> bool:
        return len(running()) == 2

    await eventually(both_running, 60, f"two `agent running` spans in the request's trace; spans: "
                                       f"{[(s.service, s.name) for s in collector.spans]}")
    root = request_span()
    assert root is not None
    by_id = {s.span_id: s for s in collector.spans if s.trace_id == root.trace_id}
    for span in running():
        chain = _chain(span, by_id)
        services = [s.service for s in reversed(chain)]
        assert services[0] == "shoal-api" and chain[-1].span_id == root.span_id, services
        assert "shoal-orchestrator" in services and "shoal-scheduler" in services, services
        order = [services.index(p) for p in ("shoal-api", "shoal-orchestrator", "shoal-scheduler", "shoal-agent")]
        assert order == sorted(order), f"causal order broken: {services}"
        starts = [s.start_ns for s in reversed(chain)]
        assert starts == sorted(starts), f"a span starts before its parent: {list(zip(services, starts, strict=True))}"
        names = [s.name for s in reversed(chain)]
        assert "orchestrator decide" in names and "scheduler decide" in names, names
    agent = {s.name for s in by_id.values() if s.service == "shoal-agent"}
    assert {"agent preparing", "executor start", "agent starting", "agent running"} <= agent, agent
    for started in (s for s in by_id.values() if s.name == "executor start"):
        services = [s.service for s in reversed(_chain(started, by_id))]
        assert services[:3] == ["shoal-api", "shoal-orchestrator", "shoal-scheduler"], services
