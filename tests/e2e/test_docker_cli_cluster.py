"""Attached (non-detached) `docker service create/update/scale/rollback` against a whole cluster
(`shoal up`'s processes, sim agents): the CLI's progress loop polls the service, its up-to-date
tasks and the nodes, and must see the real orchestrator and agents converge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cluster import LocalCluster, local_cluster
from tests.e2e.cli import docker

pytestmark = pytest.mark.e2e


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with local_cluster(tmp_path, agents=2, executor="sim") as c:
        yield c


async def test_attached_commands_converge_on_a_real_cluster(cluster: LocalCluster) -> None:
    host = cluster.docker_host
    out = await docker(host, "service", "create", "--name", "web", "--replicas", "2", "--update-monitor", "1s",
                       "--rollback-monitor", "1s", "busybox", "sleep", "60")
    service_id = out.strip().splitlines()[0]
    assert "overall progress: 2 out of 2 tasks" in out and f"verify: Service {service_id} converged" in out

    out = await docker(host, "service", "scale", "web=3")
    assert "web scaled to 3" in out and "overall progress: 3 out of 3 tasks" in out and "converged" in out

    out = await docker(host, "service", "update", "--env-add", "B=2", "web")
    assert "overall progress: 3 out of 3 tasks" in out and "verify: Service web converged" in out
    assert (await docker(host, "service", "inspect", "--format", "{{.UpdateStatus.State}}", "web")).strip() \
        == "completed"

    out = await docker(host, "service", "rollback", "web")
    assert "rollback: manually requested rollback" in out and "verify: Service web converged" in out
    state = "{{.UpdateStatus.State}} {{.Spec.TaskTemplate.ContainerSpec.Env}}"
    assert (await docker(host, "service", "inspect", "--format", state, "web")).strip() == "rollback_completed []"

    ls = (await docker(host, "service", "ls")).splitlines()[1].split()
    assert ls[:5] == [service_id[:12], "web", "replicated", "3/3", "busybox:latest"]
    ps = [line.split() for line in (await docker(host, "service", "ps", "web")).splitlines()[1:]]
    assert sorted(r[1] for r in ps if r[1] != "\\_") == ["web.1", "web.2", "web.3"]
    assert sum(r[1] == "\\_" for r in ps) >= 3  # the tasks the update and the rollback replaced
