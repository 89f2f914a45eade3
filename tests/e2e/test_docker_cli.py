"""The real docker CLI against a real API process on a real nats-server.

The orchestrator, scheduler and agents are stood in for by `FakeControlPlane`, which appends the
events they would; the full-cluster run lives with the `shoal up` tests. What is checked here is
the contract with the CLI: what it sends, what it prints from our answers.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.kernel.jetstream import JetStreamLog, connect, ensure_stream
from services.kernel.state import ClusterState
from tests.nats_server import NatsServer, child_env, free_port
from tests.unit.test_api_helpers import FakeControlPlane

pytestmark = pytest.mark.e2e

START_TIMEOUT_S = 20.0


@dataclass
class Gateway:
    docker_host: str
    process: subprocess.Popen[bytes]


@dataclass
class Docker:
    env: dict[str, str]

    async def run(self, *args: str, ok: bool = True) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            "docker", *args, env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        code = proc.returncode if proc.returncode is not None else -1
        if ok:
            assert code == 0, f"docker {' '.join(args)} failed ({code}):\n{err.decode()}"
        return code, out.decode(), err.decode()

    async def out(self, *args: str) -> str:
        return (await self.run(*args))[1]


def _docker_binary() -> str:
    found = shutil.which("docker")
    if found is None:
        pytest.fail("the docker CLI is not installed: `apt-get install docker.io` (the e2e tests need the real CLI)")
    return found


@pytest.fixture
def gateway(nats: NatsServer, tmp_path: Path) -> Iterator[Gateway]:
    port = free_port()
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.api", "--nats", nats.url, "--addr", f"127.0.0.1:{port}"],
            env=child_env(), stdout=subprocess.DEVNULL, stderr=log_file,
        )
    try:
        _wait_listening(port, proc, log_path)
        yield Gateway(docker_host=f"tcp://127.0.0.1:{port}", process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the api exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the api did not listen on {port} within {START_TIMEOUT_S}s")


@pytest.fixture
def docker(gateway: Gateway, tmp_path: Path) -> Docker:
    _docker_binary()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(DOCKER_HOST=gateway.docker_host, DOCKER_CONFIG=str(tmp_path))
    return Docker(env)


@pytest.fixture
async def control(nats: NatsServer, gateway: Gateway) -> AsyncIterator[FakeControlPlane]:
    nc = await connect([nats.url], "e2e")
    await ensure_stream(nc, "SHOAL")
    plane = FakeControlPlane(JetStreamLog(nc, "SHOAL"))
    await plane.start()
    yield plane
    await plane.stop()
    await nc.close()


def _rows(table: str) -> list[list[str]]:
    return [line.split() for line in table.strip().splitlines()[1:]]


async def test_version_and_info_show_a_swarm_manager(docker: Docker, control: FakeControlPlane) -> None:
    manager = await control.join("mgr", role="manager")
    version = await docker.out("version")
    assert "API version:       1.41" in version and "Server: Shoal" in version
    info = await docker.out("info")
    assert "Swarm: active" in info and f"NodeID: {manager}" in info and "Is Manager: true" in info


async def test_service_lifecycle_with_the_real_cli(docker: Docker, control: FakeControlPlane) -> None:
    nodes = [await control.join("mgr", role="manager"), await control.join("wrk")]

    _, out, err = await docker.run("service", "create", "--detach", "--replicas", "3", "--name", "web",
                                   "busybox", "sleep", "60")
    service_id = out.strip()
    assert len(service_id) == 25, err
    await control.run_service(service_id, nodes)

    [row] = _rows(await docker.out("service", "ls"))
    assert row == [service_id[:12], "web", "replicated", "3/3", "busybox:latest"]

    ps = _rows(await docker.out("service", "ps", "web"))
    assert sorted(r[1] for r in ps) == ["web.1", "web.2", "web.3"]
    assert {r[3] for r in ps} == {"mgr", "wrk"} and all(r[4:6] == ["Running", "Running"] for r in ps)

    assert (await docker.out("service", "scale", "web=5", "--detach")).startswith("web scaled to 5")
    await control.run_service(service_id, nodes)
    assert _rows(await docker.out("service", "ls"))[0][3] == "5/5"

    pretty = await docker.out("service", "inspect", "--pretty", "web")
    assert f"ID:\t\t{service_id}" in pretty and "Replicas:\t5" in pretty and "Image:\t\tbusybox:latest" in pretty

    assert (await docker.out("service", "rm", "web")).strip() == "web"
    assert (await docker.out("service", "ls", "-q")).strip() == ""


async def test_node_ls_marks_the_gateway_node(docker: Docker, control: FakeControlPlane) -> None:
    manager = await control.join("mgr", role="manager")
    worker = await control.join("wrk")
    rows = {r[0]: r for r in _rows(await docker.out("node", "ls"))}
    assert rows[manager] == [manager, "*", "mgr", "Ready", "Active", "Leader", "shoal-sim"]
    assert rows[worker] == [worker, "wrk", "Ready", "Active", "shoal-sim"]


async def test_errors_reach_the_user_in_dockers_words(docker: Docker, control: FakeControlPlane) -> None:
    await docker.run("service", "create", "--detach", "--name", "web", "busybox")
    code, _, err = await docker.run("service", "create", "--detach", "--name", "web", "busybox", ok=False)
    assert code == 1 and "service web already exists" in err
    code, out, err = await docker.run("service", "inspect", "nosuchsvc", ok=False)
    assert code == 1 and out.strip() == "[]" and "no such service: nosuchsvc" in err
    code, _, err = await docker.run("service", "rm", "nosuchsvc", ok=False)
    assert code == 1 and "service nosuchsvc not found" in err


async def test_attached_create_and_scale_follow_progress_until_converged(
    docker: Docker, control: FakeControlPlane
) -> None:
    node = await control.join("mgr", role="manager")
    create = asyncio.create_task(docker.run("service", "create", "--replicas", "2", "--name", "web", "busybox"))
    await _until(control, lambda state: "web" in state.service_by_name)
    service_id = control.projection.state.service_by_name["web"]
    await control.run_service(service_id, [node])
    _, out, _ = await create
    assert "overall progress: 2 out of 2 tasks" in out and f"verify: Service {service_id} converged" in out
    version = control.projection.state.services[service_id].version.index

    scale = asyncio.create_task(docker.run("service", "scale", "web=3"))
    await _until(control, lambda state: state.services[service_id].version.index > version)
    await control.run_service(service_id, [node])
    _, out, _ = await scale
    assert "overall progress: 3 out of 3 tasks" in out and "verify: Service web converged" in out


async def _until(control: FakeControlPlane, done: Callable[[ClusterState], bool]) -> None:
    """Wait until the control plane sees what the CLI, running concurrently, has done."""
    await control.catch_up()
    while not done(control.projection.state):
        await asyncio.sleep(0.1)
        await control.catch_up()


async def test_service_ps_shows_replaced_tasks_as_history(docker: Docker, control: FakeControlPlane) -> None:
    node = await control.join("mgr", role="manager")
    service_id = (await docker.out("service", "create", "-d", "--name", "web", "busybox")).strip()
    [first] = await control.run_service(service_id, [node])
    await control.fail(first, "task: non-zero exit (1)")
    [second] = await control.run_service(service_id, [node])
    lines = (await docker.out("service", "ps", "--no-trunc", "web")).strip().splitlines()[1:]
    assert lines[0].split()[:2] == [second, "web.1"] and "Running" in lines[0]
    assert lines[1].split()[:3] == [first, "\\_", "web.1"] and "Shutdown" in lines[1] and "Failed" in lines[1]
    assert '"task: non-zero exit (1)"' in lines[1]
    running = await docker.out("service", "ps", "-q", "--filter", "desired-state=running", "web")
    assert running.split() == [second]


async def test_update_force_and_rollback(docker: Docker, control: FakeControlPlane) -> None:
    await docker.run("service", "create", "-d", "--name", "web", "busybox")
    assert (await docker.out("service", "update", "-d", "--image", "busybox:1.36", "--env-add", "B=2", "web")) \
        .strip() == "web"
    image = "{{.Spec.TaskTemplate.ContainerSpec.Image}} {{.Spec.TaskTemplate.ContainerSpec.Env}}"
    assert (await docker.out("service", "inspect", "--format", image, "web")).strip() == "busybox:1.36 [B=2]"
    await docker.run("service", "update", "-d", "--force", "web")
    force = "{{.Spec.TaskTemplate.ForceUpdate}} {{.PreviousSpec.TaskTemplate.ForceUpdate}}"
    assert (await docker.out("service", "inspect", "--format", force, "web")).strip() == "1 0"
    await docker.run("service", "rollback", "-d", "web")
    state = "{{.Spec.TaskTemplate.ForceUpdate}} {{.UpdateStatus.State}}"
    assert (await docker.out("service", "inspect", "--format", state, "web")).strip() == "0 rollback_started"


async def test_service_ls_shows_modes_limits_and_ports(docker: Docker, control: FakeControlPlane) -> None:
    await docker.run("service", "create", "-d", "--mode", "global", "--name", "g", "busybox")
    await docker.run("service", "create", "-d", "--name", "c", "--replicas-max-per-node", "1", "-p", "8080:80",
                     "--limit-cpu", "0.5", "--constraint", "node.role==manager", "busybox")
    rows = {r[1]: r for r in _rows(await docker.out("service", "ls"))}
    assert rows["g"][2:4] == ["global", "0/0"]
    assert rows["c"][2:8] == ["replicated", "0/1", "(max", "1", "per", "node)"] and rows["c"][-1] == "*:8080->80/tcp"
    assert [r[1] for r in _rows(await docker.out("service", "ls", "--filter", "mode=global"))] == ["g"]
    code, _, err = await docker.run("service", "scale", "g=2", ok=False)
    assert code == 1 and "scale can only be used with replicated" in err
    code, _, err = await docker.run("service", "create", "-d", "--name", "bad!", "busybox", ok=False)
    assert code == 1 and "name must be valid as a DNS name component" in err


async def test_node_update_promote_demote_and_rm(docker: Docker, control: FakeControlPlane) -> None:
    manager = await control.join("mgr", role="manager")
    worker = await control.join("wrk")
    assert (await docker.out("node", "update", "--availability", "drain", "--label-add", "dc=east", worker)) \
        .strip() == worker
    labels = "{{.Spec.Availability}} {{.Spec.Labels}}"
    assert (await docker.out("node", "inspect", "--format", labels, worker)).strip() == "drain map[dc:east]"
    assert "promoted to a manager" in await docker.out("node", "promote", worker)
    assert "demoted in the swarm" in await docker.out("node", "demote", worker)
    code, _, err = await docker.run("node", "demote", manager, ok=False)
    assert code == 1 and "attempting to demote the last manager of the swarm" in err
    code, _, err = await docker.run("node", "rm", worker, ok=False)
    assert code == 1 and "is not down and can't be removed" in err
    await docker.run("node", "rm", "--force", worker)
    assert [r[0] for r in _rows(await docker.out("node", "ls"))] == [manager]


async def test_self_resolves_to_the_gateway_node(docker: Docker, control: FakeControlPlane) -> None:
    manager = await control.join("mgr", role="manager")
    pretty = await docker.out("node", "inspect", "--pretty", "self")
    assert f"ID:\t\t\t{manager}" in pretty and "Leader:\t\tYes" in pretty
    service_id = (await docker.out("service", "create", "-d", "--name", "web", "busybox")).strip()
    [task] = await control.run_service(service_id, [manager])
    assert [r[0] for r in _rows(await docker.out("node", "ps", "self"))] == [task[:12]]


async def test_join_tokens_and_their_rotation(docker: Docker, control: FakeControlPlane) -> None:
    await control.join("mgr", role="manager")
    shown = await docker.out("swarm", "join-token", "worker")
    token = (await docker.out("swarm", "join-token", "-q", "worker")).strip()
    assert f"docker swarm join --token {token} 10.0.0.1:2377" in shown and token.startswith("SWMTKN-1-")
    assert "Successfully rotated worker join token." in await docker.out("swarm", "join-token", "--rotate", "worker")
    rotated = (await docker.out("swarm", "join-token", "-q", "worker")).strip()
    assert rotated != token and rotated.split("-")[2] == token.split("-")[2]


async def test_logs_of_tasks_whose_node_has_no_agent_say_so(docker: Docker, control: FakeControlPlane) -> None:
    node = await control.join("wrk")
    service_id = (await docker.out("service", "create", "-d", "--name", "web", "busybox")).strip()
    await control.run_service(service_id, [node])
    code, out, err = await docker.run("service", "logs", "web", ok=False)
    assert code == 1 and out == ""
    assert f"incomplete log stream. some logs could not be retrieved for the following reasons: node {node} " \
           "is not available" in err
    code, _, err = await docker.run("service", "logs", "nosuch", ok=False)
    assert code == 1 and "no such task or service: nosuch" in err


async def test_events_replay_a_window_of_the_log(docker: Docker, control: FakeControlPlane) -> None:
    await docker.run("service", "create", "-d", "--name", "web", "busybox")
    await docker.run("service", "scale", "-d", "web=3")
    await docker.run("service", "rm", "web")
    await asyncio.sleep(1.1)  # the CLI sends `--until 0s` as whole seconds, so the current second is cut off
    out = await docker.out("events", "--since", "5m", "--until", "0s", "--filter", "type=service",
                           "--format", "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}")
    assert out.splitlines() == ["service create web", "service update web", "service remove web"]
