"""Orphaned tasks on a real nats-server with `sim` agents: an agent goes away, its node is marked down
from missed heartbeats, its task is replaced on the other node, and after the (shortened) orphan
period the stranded task is `orphaned`."""

from __future__ import annotations

import pytest

from schemas.events import ServiceCreated
from schemas.service import ContainerSpec, ReplicatedService, RestartPolicy, ServiceMode, ServiceSpec, TaskSpec
from schemas.task import TaskState
from services.kernel.jetstream import JetStreamLog
from services.orchestrator.decide import Settings
from tests.integration.simcluster import sim_cluster

pytestmark = pytest.mark.integration


async def test_tasks_of_a_node_down_longer_than_the_orphan_period_are_orphaned(jslog: JetStreamLog) -> None:
    async with sim_cluster(jslog, "n1", "n2", settings=Settings(orphan_after_ns=1_000_000_000)) as c:
        await c.until("two nodes", lambda: len(c.state.nodes) == 2)
        await c.append(ServiceCreated(service_id="web", spec=ServiceSpec(
            name="web", mode=ServiceMode(replicated=ReplicatedService(replicas=2)),
            task_template=TaskSpec(container_spec=ContainerSpec(image="nginx"),
                                   restart_policy=RestartPolicy(delay=0)))))
        await c.until("one running task per node", lambda: sorted(
            t.node_id for t in c.tasks("web") if t.status.state == TaskState.RUNNING) == ["n1", "n2"])
        (stranded,) = [t for t in c.tasks("web") if t.node_id == "n2"]
        await c.stop_agent("n2")
        await c.until("n2 down", lambda: c.state.nodes["n2"].status.state == "down")
        await c.until("its slot running on n1", lambda: sorted(
            t.node_id for t in c.tasks("web")
            if t.status.state == TaskState.RUNNING and t.desired_state == TaskState.RUNNING) == ["n1", "n1"])
        assert c.state.tasks[stranded.id].desired_state == TaskState.SHUTDOWN
        await c.until("the stranded task orphaned", lambda: c.state.tasks[stranded.id].status.state
                      == TaskState.ORPHANED)
        assert c.state.tasks[stranded.id].status.message == stranded.status.message
