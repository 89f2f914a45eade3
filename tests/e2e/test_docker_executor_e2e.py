"""Issue 4 end to end: a Shoal cluster whose agents run real containers on a real Docker engine,
driven by the real docker CLI pointed at Shoal's API, and checked with the same CLI pointed at the
engine. Two agents share the one engine, as `shoal up --agents 2 --executor docker` does.

Every test stops its cluster and removes the containers labelled with its node ids, and no other
(the engine is shared with whatever else runs on it).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import LocalCluster, local_cluster, node_ids
from tests.docker_engine import TEST_IMAGE
from tests.e2e.cli import api_get, docker, eventually, running_tasks, service_tasks
from tests.registry import fake_registry

pytestmark = pytest.mark.e2e

Json = dict[str, Any]
SLEEP = ("sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait")
"""PID 1 ignores signals it has no handler for: trap TERM as a real server does, so stops are quick."""


@pytest.fixture
async def cluster(tmp_path: Path, engine: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LocalCluster]:
    # Agents announce Swarm's 5 s heartbeat, so a node is `down` after 15 s of silence instead of 3 s:
    # an agent restarted on purpose (kill -9, or stopped while the test changes its containers) comes
    # back within that even on a loaded machine, and its tasks are not rescheduled meanwhile.
    monkeypatch.setenv("SHOAL_HEARTBEAT", "5")
    async with local_cluster(tmp_path, agents=2, executor="docker", engine=engine) as c:
        yield c


async def _nodes_ready(c: LocalCluster, count: int) -> bool:
    nodes: list[Json] = await api_get(c.api_url, "/nodes")
    return _count(nodes, "ready") == count


async def _create(c: LocalCluster, name: str, *flags: str, command: tuple[str, ...] = SLEEP) -> str:
    out = await docker(c.docker_host, "service", "create", "--detach", "--name", name, *flags, TEST_IMAGE, *command)
    return out.strip()


async def _converged(c: LocalCluster, service: str, replicas: int, timeout_s: float = 90) -> list[Json]:
    async def check() -> bool:
        running = await running_tasks(c.api_url, service)
        return len(running) == replicas and len({t["Slot"] for t in running}) == replicas

    await eventually(check, timeout_s,
                     f"{service} at {replicas} running tasks; tasks: {await service_tasks(c.api_url, service)}"
                     f"\nagent-1:\n{c.log('agent-1')}\nagent-2:\n{c.log('agent-2')}")
    return await running_tasks(c.api_url, service)


async def _containers(engine: str, service_id: str) -> list[Json]:
    """`docker inspect` of every container of a service, on the engine itself."""
    ids = (await docker(engine, "ps", "-aq", "--no-trunc", "--filter",
                        f"label=com.docker.swarm.service.id={service_id}")).split()
    if not ids:
        return []
    found: list[Json] = json.loads(await docker(engine, "inspect", *ids))
    return found


async def _live_containers(engine: str, service_id: str) -> list[Json]:
    return [c for c in await _containers(engine, service_id) if c["State"]["Running"]]


def _count(tasks: list[Json], state: str) -> int:
    return sum(t["Status"]["State"] == state for t in tasks)


def _label(container: Json, name: str) -> str:
    value: str = container["Config"]["Labels"].get(f"com.docker.swarm.{name}", "")
    return value


def _time(text: str) -> datetime:
    """Docker's RFC 3339 with nanoseconds, cut to the microseconds Python reads."""
    head, _, rest = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(rest + '000000')[:6]}+00:00")


# -- the scenarios ------------------------------------------------------------------------------


async def test_replicas_over_two_agents_are_labelled_limited_containers_and_a_killed_one_is_replaced(
        cluster: LocalCluster, engine: str) -> None:
    service_id = await _create(cluster, "web", "--replicas", "3", "--limit-cpu", "0.5", "--limit-memory", "64M",
                               "--reserve-memory", "16M", "--label", "team=a", "--container-label", "tier=front")
    tasks = await _converged(cluster, "web", 3)
    live = await _live_containers(engine, service_id)
    assert len(live) == 3
    nodes = set(node_ids(cluster.options))
    by_task = {_label(c, "task.id"): c for c in live}
    assert set(by_task) == {t["ID"] for t in tasks}
    for task in tasks:
        container = by_task[task["ID"]]
        assert container["Id"] == task["Status"]["ContainerStatus"]["ContainerID"]
        assert _label(container, "node.id") == task["NodeID"] and task["NodeID"] in nodes
        assert (_label(container, "service.id"), _label(container, "service.name")) == (service_id, "web")
        assert _label(container, "task.name") == f"web.{task['Slot']}.{task['ID']}"
        assert container["Name"] == f"/web.{task['Slot']}.{task['ID']}"
        assert container["Config"]["Labels"]["tier"] == "front"
        host = container["HostConfig"]
        assert (host["NanoCpus"], host["Memory"], host["MemoryReservation"]) == (500_000_000, 64 << 20, 16 << 20)
        assert host["RestartPolicy"]["Name"] == "no", "restarts are the orchestrator's, never Docker's"
    # Spread is judged on where the slots were first placed: a container that failed to start on one
    # node under load is replaced on the other (recent failures rank a node last), as in Swarm.
    history = await service_tasks(cluster.api_url, "web")
    assert {t["NodeID"] for t in history} == nodes, "spread over both agents: " + "; ".join(
        f"slot {t['Slot']} on {t['NodeID']}: {t['Status']['State']} {t['Status'].get('Err', '')}" for t in history)

    victim = tasks[0]
    await docker(engine, "kill", victim["Status"]["ContainerStatus"]["ContainerID"])

    async def replaced() -> bool:
        same_slot = [t for t in await service_tasks(cluster.api_url, "web") if t["Slot"] == victim["Slot"]]
        old = next(t for t in same_slot if t["ID"] == victim["ID"])
        return old["Status"]["State"] == "failed" and any(
            t["Status"]["State"] == "running" for t in same_slot if t["ID"] != victim["ID"])

    await eventually(replaced, 60, f"the killed task {victim['ID']} replaced in slot {victim['Slot']}")
    old = next(t for t in await service_tasks(cluster.api_url, "web") if t["ID"] == victim["ID"])
    assert old["Status"]["Err"] == "task: non-zero exit (137)"
    await _converged(cluster, "web", 3)
    assert len(await _live_containers(engine, service_id)) == 3


async def test_on_failure_with_max_attempts_2_makes_exactly_three_attempts(cluster: LocalCluster, engine: str) -> None:
    service_id = await _create(cluster, "flaky", "--restart-condition", "on-failure", "--restart-max-attempts", "2",
                               "--restart-delay", "500ms", command=("sh", "-c", "sleep 0.3; exit 1"))

    async def three_failed() -> bool:
        return _count(await service_tasks(cluster.api_url, "flaky"), "failed") >= 3

    await eventually(three_failed, 90, f"three failed attempts; tasks: {await service_tasks(cluster.api_url, 'flaky')}")
    # The orchestrator would make the 4th at once (delay 500 ms): give it several delays to not do so.
    for _ in range(40):
        tasks = await service_tasks(cluster.api_url, "flaky")
        assert len(tasks) == 3, f"exactly three attempts, then stop: {tasks}"
        await asyncio.sleep(0.2)
    assert all(t["Status"]["Err"] == "task: non-zero exit (1)" for t in tasks)
    containers = await _containers(engine, service_id)
    assert len(containers) == 3 and not any(c["State"]["Running"] for c in containers)
    assert {c["State"]["ExitCode"] for c in containers} == {1}


async def test_a_failing_health_check_fails_the_task_before_it_runs_and_it_is_replaced(
        cluster: LocalCluster, engine: str) -> None:
    await _create(cluster, "sick", "--health-cmd", "false", "--health-interval", "1s", "--health-retries", "1",
                  "--restart-delay", "1s")
    spec = (await api_get(cluster.api_url, "/services/sick"))["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert spec["Healthcheck"] == {"Test": ["CMD-SHELL", "false"], "Interval": 1_000_000_000, "Retries": 1}

    async def failed_twice() -> bool:
        return _count(await service_tasks(cluster.api_url, "sick"), "failed") >= 2

    await eventually(failed_twice, 90,
                     f"a failed task, replaced, failed again: {await service_tasks(cluster.api_url, 'sick')}")
    failed = [t for t in await service_tasks(cluster.api_url, "sick") if t["Status"]["State"] == "failed"]
    for task in failed:
        assert task["Status"]["Err"] == "dockerexec: unhealthy container"
        assert task["Status"]["Message"] == "starting", "never `running`: it was never healthy"
    ps = await docker(cluster.docker_host, "service", "ps", "--no-trunc", "sick")
    assert "dockerexec: unhealthy container" in ps

    await _create(cluster, "well", "--health-cmd", "true", "--health-interval", "1s")
    [task] = await _converged(cluster, "well", 1)
    [container] = await _live_containers(engine, task["ServiceID"])
    assert container["State"]["Health"]["Status"] == "healthy"


async def test_rolling_update_of_env_replaces_every_container_two_slots_at_a_time(
        cluster: LocalCluster, engine: str) -> None:
    service_id = await _create(cluster, "roll", "--replicas", "4", "--env", "V=1", "--update-parallelism", "2",
                               "--update-delay", "0s", "--stop-grace-period", "2s")
    await _converged(cluster, "roll", 4)
    before = {c["Id"]: c for c in await _live_containers(engine, service_id)}
    await docker(cluster.docker_host, "service", "update", "--detach", "--env-add", "V=2", "roll")

    async def updated() -> bool:
        live = await _live_containers(engine, service_id)
        return len(live) == 4 and all("V=2" in c["Config"]["Env"] for c in live)

    await eventually(updated, 120, f"four containers with V=2; tasks: {await service_tasks(cluster.api_url, 'roll')}")
    await _converged(cluster, "roll", 4)
    after = {c["Id"]: c for c in await _live_containers(engine, service_id)}
    assert not set(after) & set(before), "every container is new"
    slot_of = {_label(c, "task.id"): c for c in (await _containers(engine, service_id))}
    tasks = await service_tasks(cluster.api_url, "roll")
    slots: dict[int, list[Json]] = {}
    for task in tasks:
        slots.setdefault(task["Slot"], []).append(slot_of[task["ID"]])
    # stop-first: in each slot the old container ended before the new one started; parallelism 2:
    # no more than two slots were ever down at once.
    down: list[tuple[datetime, datetime]] = []
    for containers in slots.values():
        old = next(c for c in containers if c["Id"] in before)
        new = next(c for c in containers if c["Id"] in after)
        ended, started = _time(old["State"]["FinishedAt"]), _time(new["State"]["StartedAt"])
        assert ended <= started, "stop-first: the old container stops before the new one starts"
        down.append((ended, started))
    assert max(sum(a <= t < b for a, b in down) for t, _ in down) <= 2, f"at most 2 slots at once: {down}"
    assert await docker(cluster.docker_host, "service", "inspect", "--format", "{{.UpdateStatus.State}}", "roll") \
        in ("completed\n", "updating\n")


async def test_drain_stops_a_nodes_containers_and_runs_them_on_the_other(cluster: LocalCluster, engine: str) -> None:
    service_id = await _create(cluster, "spread", "--replicas", "4", "--stop-grace-period", "2s")
    tasks = await _converged(cluster, "spread", 4)
    drained = tasks[0]["NodeID"]
    await docker(cluster.docker_host, "node", "update", "--availability", "drain", drained)

    async def moved() -> bool:
        live = await _live_containers(engine, service_id)
        return len(live) == 4 and all(_label(c, "node.id") != drained for c in live)

    await eventually(moved, 90,
                     f"every container off {drained}; tasks: {await service_tasks(cluster.api_url, 'spread')}")
    running = await _converged(cluster, "spread", 4)
    assert drained not in {t["NodeID"] for t in running}
    stopped = [c for c in await _containers(engine, service_id) if _label(c, "node.id") == drained]
    assert stopped and not any(c["State"]["Running"] for c in stopped)


async def test_agent_kill_9_and_restart_adopts_containers_and_learns_what_happened_meanwhile(
        cluster: LocalCluster, engine: str) -> None:
    service_id = await _create(cluster, "keep", "--replicas", "4")
    tasks = await _converged(cluster, "keep", 4)
    before = {t["ID"]: t["Status"]["ContainerStatus"]["ContainerID"] for t in tasks}
    started = {c["Id"]: c["State"]["StartedAt"] for c in await _live_containers(engine, service_id)}

    await cluster.kill("agent-1", signal.SIGKILL)
    await eventually(lambda: _nodes_ready(cluster, 2), 60, "agent-1 back")
    await _converged(cluster, "keep", 4)
    after = {t["ID"]: t["Status"]["ContainerStatus"]["ContainerID"]
             for t in await running_tasks(cluster.api_url, "keep")}
    assert after == before, "same tasks, same containers"
    live = await _live_containers(engine, service_id)
    assert {c["Id"]: c["State"]["StartedAt"] for c in live} == started, "no container restarted, none added"

    # While agent-1 is down: one of its containers dies, and a container of a task the cluster never
    # had appears with its node label. On restart the first is reported failed (and replaced), the
    # second removed.
    node_1 = node_ids(cluster.options)[0]
    victim = next(t for t in tasks if t["NodeID"] == node_1)
    await cluster.stop_process("agent-1")
    await docker(engine, "kill", victim["Status"]["ContainerStatus"]["ContainerID"])
    stray = (await docker(engine, "create", "--network", "none", "--label", f"com.docker.swarm.node.id={node_1}",
                          "--label", "com.docker.swarm.task.id=nosuchtask", TEST_IMAGE, "sleep", "5")).strip()
    await cluster.start_process("agent-1")

    async def learned() -> bool:
        """The exit is reported: `failed` (or `shutdown`, if the restart took so long under load that
        the node was marked down and the orchestrator had moved the task meanwhile, as Swarm does)."""
        task = next(t for t in await service_tasks(cluster.api_url, "keep") if t["ID"] == victim["ID"])
        return task["Status"]["State"] in ("failed", "shutdown") and task["Status"]["ContainerStatus"]["ExitCode"] != 0

    await eventually(learned, 60, f"the container that died meanwhile reported: {victim['ID']}")
    task = next(t for t in await service_tasks(cluster.api_url, "keep") if t["ID"] == victim["ID"])
    assert task["Status"]["ContainerStatus"]["ExitCode"] == 137
    if task["DesiredState"] == "running":
        assert (task["Status"]["State"], task["Status"]["Err"]) == ("failed", "task: non-zero exit (137)")
    await _converged(cluster, "keep", 4)

    async def stray_removed() -> bool:
        return not (await docker(engine, "ps", "-aq", "--filter", f"id={stray}")).strip()

    await eventually(stray_removed, 30, "the container of a task the cluster does not know removed")
    running = await running_tasks(cluster.api_url, "keep")
    assert Counter(t["Slot"] for t in running) == Counter({1: 1, 2: 1, 3: 1, 4: 1})
    assert len(await _live_containers(engine, service_id)) == 4


async def test_an_image_that_does_not_exist_is_rejected_with_the_engines_message(
        cluster: LocalCluster, engine: str) -> None:
    await docker(cluster.docker_host, "service", "create", "--detach", "--name", "ghost", "--no-resolve-image",
                 "shoal-no-such-image:nope", "sleep", "60")

    async def rejected() -> bool:
        return any(t["Status"]["State"] == "rejected" for t in await service_tasks(cluster.api_url, "ghost"))

    await eventually(rejected, 60, f"a rejected task; tasks: {await service_tasks(cluster.api_url, 'ghost')}")
    task = next(t for t in await service_tasks(cluster.api_url, "ghost") if t["Status"]["State"] == "rejected")
    engine_says = await _engine_error(engine, "shoal-no-such-image:nope")
    assert task["Status"]["Err"] == engine_says
    ps = await docker(cluster.docker_host, "service", "ps", "--no-trunc", "ghost")
    assert "Rejected" in ps and engine_says in ps


async def _engine_error(engine: str, image: str) -> str:
    """What the engine answers to a pull of `image`: the text `docker pull` prints after the prefix."""
    _, err = await _docker_stderr({"DOCKER_HOST": engine}, "pull", image)
    return err.strip().removeprefix("Error response from daemon: ")


async def _docker_stderr(env: dict[str, str], *args: str) -> tuple[int, str]:
    """`docker <args>` with extra environment: its exit code and stderr."""
    proc = await asyncio.create_subprocess_exec("docker", *args, env={**os.environ, **env},
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    return (proc.returncode or 0), err.decode()


async def test_with_registry_auth_the_clis_credentials_reach_the_registry(
        cluster: LocalCluster, tmp_path: Path) -> None:
    """`docker service create --with-registry-auth` reads the credentials from the CLI's own config and
    sends them as X-Registry-Auth; Shoal keeps them in the spec (never shows them) and the agent
    hands them to the engine's pull."""
    async with fake_registry() as registry:
        config = tmp_path / "docker-config"
        config.mkdir()
        basic = base64.b64encode(b"ann:s3cret").decode()
        (config / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": basic}}}))
        code, err = await _docker_stderr({"DOCKER_HOST": cluster.docker_host, "DOCKER_CONFIG": str(config)},
                                         "service", "create", "--detach", "--with-registry-auth", "--name", "private",
                                         f"{registry.host}/team/app:v1", "sleep", "60")
        assert code == 0, err

        async def rejected() -> bool:
            return _count(await service_tasks(cluster.api_url, "private"), "rejected") >= 1

        await eventually(rejected, 60, f"a rejected task; tasks: {await service_tasks(cluster.api_url, 'private')}")
    assert registry.saw_basic("ann", "s3cret"), registry.authorizations
    task = next(t for t in await service_tasks(cluster.api_url, "private") if t["Status"]["State"] == "rejected")
    assert "manifest unknown" in task["Status"]["Err"]
    shown = await docker(cluster.docker_host, "service", "inspect", "private")
    assert "s3cret" not in shown and basic not in shown and "RegistryAuth" not in json.dumps(task)
