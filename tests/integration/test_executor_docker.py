"""The executor contract against a real Docker engine (a private dockerd if none answers)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator

import pytest

from schemas.service import ContainerSpec, HealthConfig, PullOptions, TaskSpec
from schemas.task import Task
from services.agent.executor import Executor, ExecutorError, Health, Phase
from services.agent.executors.docker import DockerExecutor
from services.kernel.ids import new_id
from tests.docker_engine import TEST_IMAGE, docker_engine, ensure_test_image
from tests.registry import fake_registry
from tests.unit.test_executor_contract import ExecutorContract, Exits

NODE = "node-health"


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    with docker_engine() as host:
        ensure_test_image(host)
        yield host


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
