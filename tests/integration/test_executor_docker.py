"""The executor contract against a real Docker engine (a private dockerd if none answers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from schemas.service import ContainerSpec
from services.agent.executor import Executor
from services.agent.executors.docker import DockerExecutor
from tests.docker_engine import docker_engine, ensure_test_image
from tests.unit.test_executor_contract import ExecutorContract


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
