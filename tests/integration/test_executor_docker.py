"""The executor contract against a real Docker engine (a private dockerd if none answers)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession, UnixConnector, web

from schemas.service import ContainerSpec, HealthConfig, PullOptions, TaskSpec
from schemas.task import Task
from services.agent.executor import Executor, ExecutorError, Health, Phase
from services.agent.executors.docker import DockerExecutor
from services.kernel.ids import new_id
from tests.docker_engine import TEST_IMAGE, ensure_test_image
from tests.integration.test_logs_protocol import until
from tests.registry import fake_registry
from tests.unit.test_executor_contract import ExecutorContract, Exits

NODE = "node-health"


class TestDockerExecutor(ExecutorContract):
    @pytest.fixture(autouse=True)
    def _engine(self, engine: str) -> None:
        self.engine = engine
        self.image = ensure_test_image(engine)

    def new_executor(self) -> Executor:
        return DockerExecutor(self.engine, ["node1"])

    def runs_until_stopped(self) -> ContainerSpec:
        # PID 1 in a container ignores signals it has no handler for: trap them as a real server does.
        return ContainerSpec(command=["sh", "-c"], args=["trap 'exit 143' TERM; sleep 30 & wait"])

    def exits_with(self, code: int, after_s: float) -> ContainerSpec:
        return ContainerSpec(command=["sh", "-c"], args=[f"sleep {after_s}; exit {code}"])

    def ignores_stop_signal(self) -> ContainerSpec:
        return ContainerSpec(command=["sh", "-c"], args=["trap '' TERM; sleep 30 & wait; sleep 30"])


# -- beyond the contract: health checks, pulls and their errors --------------------------------------


@pytest.fixture
async def docker_ex(engine: str) -> AsyncIterator[tuple[DockerExecutor, list[Task]]]:
    executor = DockerExecutor(engine, [NODE])
    made: list[Task] = []
    yield executor, made
    for task in made:
        await executor.remove(task.id)
    await executor.close()


def _task(made: list[Task], image: str = TEST_IMAGE, health: HealthConfig | None = None,
          auth: str | None = None) -> Task:
    spec = ContainerSpec(image=image, command=["sleep", "30"], healthcheck=health, stop_grace_period=0,
                         pull_options=PullOptions(registry_auth=auth) if auth else None)
    task = Task(id=new_id(), node_id=NODE, service_id="svc1", spec=TaskSpec(container_spec=spec))
    made.append(task)
    return task


def _check(test: str, retries: int = 1) -> HealthConfig:
    return HealthConfig(test=["CMD-SHELL", test], interval=200_000_000, timeout=1_000_000_000, retries=retries)


@pytest.mark.parametrize(("probe", "becomes"), [("true", Health.HEALTHY), ("false", Health.UNHEALTHY)])
async def test_health_starts_as_starting_and_its_changes_are_watched(
        docker_ex: tuple[DockerExecutor, list[Task]], probe: str, becomes: Health) -> None:
    executor, made = docker_ex
    exits = Exits()
    executor.watch(exits)
    task = _task(made, health=_check(probe))
    await executor.prepare(task)
    started = await executor.start(task)
    assert (started.phase, started.health) == (Phase.RUNNING, Health.STARTING)
    changed = await exits.wait(task.id, within_s=20)
    assert (changed.phase, changed.health) == (Phase.RUNNING, becomes)
    [listed] = [c for c in await executor.list() if c.task_id == task.id]
    assert listed.health is becomes


async def test_without_a_health_check_there_is_no_health(docker_ex: tuple[DockerExecutor, list[Task]]) -> None:
    executor, made = docker_ex
    task = _task(made)
    await executor.prepare(task)
    assert (await executor.start(task)).health is Health.NONE


async def test_a_missing_image_is_a_fatal_error_with_the_engines_message(
        docker_ex: tuple[DockerExecutor, list[Task]]) -> None:
    executor, made = docker_ex
    with pytest.raises(ExecutorError) as e:
        await executor.prepare(_task(made, image="shoal-no-such-image:nope"))
    assert not e.value.temporary and str(e.value)
    assert await executor.list() == []


async def test_the_registry_auth_header_reaches_the_registry(docker_ex: tuple[DockerExecutor, list[Task]]) -> None:
    """The credentials given to `--with-registry-auth` are the ones the engine used on the pull."""
    executor, made = docker_ex
    async with fake_registry() as registry:
        auth = base64.urlsafe_b64encode(json.dumps({"username": "ann", "password": "s3cret",
                                                    "serveraddress": registry.host}).encode()).decode()
        with pytest.raises(ExecutorError) as e:
            await executor.prepare(_task(made, image=f"{registry.host}/team/app:v1", auth=auth))
    assert "manifest unknown" in str(e.value) and not e.value.temporary
    assert registry.saw_basic("ann", "s3cret"), registry.authorizations


class Relay:
    """A unix socket in front of the engine whose connections the test can cut, and refuse for a while:
    a lost events stream without touching the shared engine."""

    def __init__(self, target: str, path: Path) -> None:
        self.target, self.path = target, path
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.requests: list[bytes] = []

    async def open(self) -> None:
        self.server = await asyncio.start_unix_server(self._client, str(self.path))

    def cut(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        self.writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer, self.requests), self._pipe(up_reader, writer, []),
                             return_exceptions=True)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list[bytes]) -> None:
        try:
            while data := await reader.read(65536):
                seen.append(data)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


async def test_a_health_change_during_an_events_gap_is_seen_after_the_reconnect(
        docker_ex: tuple[DockerExecutor, list[Task]], engine: str, tmp_path: Path) -> None:
    direct, made = docker_ex
    relay = Relay(engine.removeprefix("unix://"), tmp_path / "engine.sock")
    await relay.open()
    watcher = DockerExecutor(f"unix://{relay.path}", [NODE])
    try:
        changes = Exits()
        watcher.watch(changes)
        # Healthy only once /tmp/ok exists; the start period keeps the failing probes from counting.
        task = _task(made, health=HealthConfig(test=["CMD-SHELL", "test -e /tmp/ok"], interval=200_000_000,
                                               retries=1, start_period=60_000_000_000))
        await direct.prepare(task)
        started = await direct.start(task)
        assert (await watcher.adopt(started)).health is Health.STARTING
        await until(lambda: any(b"/events?" in r for r in relay.requests), "the events stream connected")
        relay.cut()
        touch = await asyncio.create_subprocess_exec("docker", "-H", engine, "exec", started.container_id,
                                                     "sh", "-c", ": > /tmp/ok")
        assert await touch.wait() == 0

        async def healthy() -> bool:
            return (await direct.adopt(started)).health is Health.HEALTHY

        await until(healthy, "the container healthy while the watcher is cut off")
        assert task.id not in changes.seen
        await relay.open()
        seen = await changes.wait(task.id, within_s=30)
        assert (seen.phase, seen.health) == (Phase.RUNNING, Health.HEALTHY) and seen.pid > 0
    finally:
        relay.cut()
        await watcher.close()



async def test_one_process_serving_several_nodes_sees_each_nodes_events_and_no_others(
        engine: str, tmp_path: Path) -> None:
    """The engine ANDs label filters: one filter per node would match no container at all."""
    relay = Relay(engine.removeprefix("unix://"), tmp_path / "engine.sock")
    await relay.open()
    served = DockerExecutor(engine, ["multi-a", "multi-b"])
    other = DockerExecutor(engine, ["multi-c"])
    watcher = DockerExecutor(f"unix://{relay.path}", ["multi-a", "multi-b"])
    exits = Exits()
    watcher.watch(exits)
    runs = [(served, "multi-c", 1, 5), (served, "multi-a", 2, 3), (served, "multi-b", 2, 4)]
    tasks = [Task(id=new_id(), node_id=node, service_id="svc1", spec=TaskSpec(container_spec=ContainerSpec(
        image=TEST_IMAGE, command=["sh", "-c"], args=[f"sleep {after_s}; exit {code}"])))
        for _, node, after_s, code in runs]
    try:
        await until(lambda: any(b"/events?" in r for r in relay.requests), "the events stream connected")
        for (_, node, _, _), task in zip(runs, tasks, strict=True):
            executor = other if node == "multi-c" else served
            await executor.prepare(task)
            await executor.start(task)
        for (_, _, _, code), task in zip(runs[1:], tasks[1:], strict=True):
            seen = await exits.wait(task.id, within_s=60)
            assert (seen.phase, seen.exit_code) == (Phase.EXITED, code)
        assert tasks[0].id not in exits.seen, "multi-c's container exited first but is not this process's"
    finally:
        await other.remove(tasks[0].id)
        for task in tasks[1:]:
            await served.remove(task.id)
        relay.cut()
        for executor in (watcher, served, other):
            await executor.close()


class FailingRemovals:
    """The real engine behind a unix socket that answers container removals as the test says: the
    engine's own failures (a busy filesystem, a daemon error) cannot be caused on demand."""

    def __init__(self, engine: str, path: Path) -> None:
        self.upstream = ClientSession(connector=UnixConnector(path=engine.removeprefix("unix://")))
        self.path = path
        self.answer = (500, "")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)

    async def __aenter__(self) -> str:
        await self.runner.setup()
        await web.UnixSite(self.runner, str(self.path)).start()
        return f"unix://{self.path}"

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()
        await self.upstream.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "DELETE" and "/containers/" in request.path:
            status, message = self.answer
            return web.json_response({"message": message}, status=status)
        headers = {k: v for k, v in request.headers.items() if k.lower() == "content-type"}
        async with self.upstream.request(request.method, f"http://engine{request.path_qs}", headers=headers,
                                         data=await request.read()) as r:
            return web.Response(body=await r.read(), status=r.status, headers={"Content-Type": r.content_type})


async def test_remove_lets_only_gone_or_already_removing_pass_and_retries_other_failures(
        docker_ex: tuple[DockerExecutor, list[Task]], engine: str, tmp_path: Path) -> None:
    direct, made = docker_ex
    task = _task(made)
    await direct.prepare(task)
    proxy = FailingRemovals(engine, tmp_path / "faulty.sock")
    async with proxy as host:
        flaky = DockerExecutor(host, [NODE])
        try:
            for status, message in [(404, "No such container: x"),
                                    (409, "removal of container x is already in progress")]:
                proxy.answer = (status, message)
                await flaky.remove(task.id)
            for status, message in [(500, "driver failed to remove root filesystem: device or resource busy"),
                                    (409, "You cannot remove a running container x")]:
                proxy.answer = (status, message)
                with pytest.raises(ExecutorError) as e:
                    await flaky.remove(task.id)
                assert e.value.temporary and message in str(e.value)
        finally:
            await flaky.close()
    assert await direct.list() != [], "the container is still there for the fixture to remove"
