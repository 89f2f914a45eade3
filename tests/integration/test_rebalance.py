"""Rebalance on a real nats-server with `sim` agents: 4 replicas on one node, a second node joins, and
the service ends 2 and 2 without ever having fewer than 4 tasks running."""

from __future__ import annotations

from collections import Counter

import pytest

from schemas.events import ServiceCreated
from schemas.service import ContainerSpec, ReplicatedService, ServiceMode, ServiceSpec, TaskSpec
from schemas.task import TaskState
from services.kernel.jetstream import JetStreamLog
from tests.integration.simcluster import SimCluster, sim_cluster

pytestmark = pytest.mark.integration


def per_node(c: SimCluster) -> Counter[str]:
    return Counter(t.node_id for t in c.tasks("web")
                   if t.status.state == TaskState.RUNNING and t.desired_state == TaskState.RUNNING)


async def test_a_joining_node_gets_half_of_four_replicas_never_fewer_than_four_running(jslog: JetStreamLog) -> None:
    async with sim_cluster(jslog, "n1", one_per_slot=False) as c:  # a move starts the new task first
        await c.until("n1 joined", lambda: "n1" in c.state.nodes)
        await c.append(ServiceCreated(service_id="web", spec=ServiceSpec(
            name="web", labels={"shoal.rebalance": "true"},
            mode=ServiceMode(replicated=ReplicatedService(replicas=4)),
            task_template=TaskSpec(container_spec=ContainerSpec(image="nginx")))))
        await c.until("4 running on n1", lambda: per_node(c) == Counter(n1=4))
        fewest = 4

        def watch() -> None:
            nonlocal fewest
            fewest = min(fewest, sum(1 for t in c.tasks("web") if t.status.state == TaskState.RUNNING))

        await c.start_agent("n2")
        await c.until("2 and 2", lambda: per_node(c) == Counter(n1=2, n2=2)
                      and len([t for t in c.tasks("web") if t.status.state == TaskState.RUNNING]) == 4, watch=watch)
        assert fewest >= 4
