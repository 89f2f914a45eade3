"""A replicated job on a real nats-server with `sim` agents: 5 completions, 2 at a time, and never more."""

from __future__ import annotations

import pytest

from schemas.events import ServiceCreated, ServiceUpdated
from schemas.service import ContainerSpec, GlobalJob, ReplicatedJob, ServiceMode, ServiceSpec, TaskSpec
from schemas.task import RANK, TaskState
from services.kernel.jetstream import JetStreamLog
from tests.integration.simcluster import SimCluster, sim_cluster

pytestmark = pytest.mark.integration

SHORT_RUN = TaskSpec(container_spec=ContainerSpec(image="busybox", env=["SHOAL_SIM_EXIT=0", "SHOAL_SIM_RUN=0.3"]))


def batch(concurrent: int, total: int, image: str = "busybox") -> ServiceSpec:
    return ServiceSpec(name="batch", task_template=SHORT_RUN,
                       mode=ServiceMode(replicated_job=ReplicatedJob(max_concurrent=concurrent,
                                                                     total_completions=total)))


def completed(c: SimCluster, service_id: str, iteration: int = 0) -> list[int]:
    return sorted(t.slot for t in c.tasks(service_id) if t.status.state == TaskState.COMPLETE
                  and t.job_iteration is not None and t.job_iteration.index == iteration)


async def test_a_job_runs_5_completions_2_at_a_time(jslog: JetStreamLog) -> None:
    async with sim_cluster(jslog, "n1", "n2") as c:
        await c.until("two nodes", lambda: len(c.state.nodes) == 2)
        await c.append(ServiceCreated(service_id="batch", spec=batch(2, 5)))
        most = 0

        def watch() -> None:
            nonlocal most
            going = [t for t in c.tasks("batch") if RANK[t.status.state] <= RANK[TaskState.RUNNING]
                     and t.desired_state == TaskState.COMPLETE]
            most = max(most, len(going))

        await c.until("5 completions", lambda: completed(c, "batch") == [0, 1, 2, 3, 4], watch=watch)
        assert most == 2, "never more than MaxConcurrent on their way, and that many at the start"
        assert len(c.tasks("batch")) == 5 and {t.node_id for t in c.tasks("batch")} == {"n1", "n2"}

        await c.append(ServiceUpdated(service_id="batch", spec=batch(3, 3)))
        await c.until("the re-run's 3 completions", lambda: completed(c, "batch", 1) == [0, 1, 2])


async def test_a_global_job_runs_once_on_each_node(jslog: JetStreamLog) -> None:
    async with sim_cluster(jslog, "n1", "n2", "n3") as c:
        await c.until("three nodes", lambda: len(c.state.nodes) == 3)
        await c.append(ServiceCreated(service_id="once", spec=ServiceSpec(
            name="once", task_template=SHORT_RUN, mode=ServiceMode(global_job=GlobalJob()))))
        await c.until("one completion per node", lambda: sorted(
            t.node_id for t in c.tasks("once") if t.status.state == TaskState.COMPLETE) == ["n1", "n2", "n3"])
        assert len(c.tasks("once")) == 3
