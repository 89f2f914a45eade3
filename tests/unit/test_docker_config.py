"""The Docker executor's translation of a task into an engine container config (pure, no engine)."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.service import (
    ContainerSpec,
    HealthConfig,
    PullOptions,
    ResourceLimits,
    ResourceReservations,
    Resources,
    TaskSpec,
)
from schemas.task import Task
from services.agent.executor import Health, Phase
from services.agent.executors.docker import (
    NODE_LABEL,
    TASK_LABEL,
    container_name,
    create_config,
    from_event,
    observed,
    pull_params,
    registry_auth,
)


def _task(**spec: Any) -> Task:
    return Task(id="tid", service_id="sid", service_name="web", slot=2, node_id="nid", labels={"a": "b"},
                spec=TaskSpec(container_spec=ContainerSpec(image="busybox", **spec),
                              resources=Resources(limits=ResourceLimits(nano_cpus=500_000_000, memory_bytes=64 << 20),
                                                  reservations=ResourceReservations(memory_bytes=16 << 20))))


def test_containers_are_named_like_swarm_names_them() -> None:
    assert container_name(_task()) == "web.2.tid"
    assert container_name(Task(id="t", service_name="g", slot=0, node_id="n")) == "g.n.t"


def test_swarm_labels_name_node_service_and_task() -> None:
    labels = create_config(_task(labels={"x": "y"}))["Labels"]
    assert labels["com.docker.swarm.node.id"] == "nid" and labels["com.docker.swarm.task.id"] == "tid"
    assert labels["com.docker.swarm.service.id"] == "sid" and labels["com.docker.swarm.service.name"] == "web"
    assert labels["com.docker.swarm.task.name"] == "web.2.tid" and labels["x"] == "y" and labels["a"] == "b"


def test_limits_and_reservations_map_to_host_config() -> None:
    host = create_config(_task())["HostConfig"]
    assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 64 << 20
    assert host["MemoryReservation"] == 16 << 20


def test_dockers_own_restart_policy_is_never_used() -> None:
    assert create_config(_task())["HostConfig"]["RestartPolicy"] == {"Name": "no"}


def test_command_args_env_and_stop_settings() -> None:
    config = create_config(_task(command=["sh", "-c"], args=["echo hi"], env=["A=1"], dir="/tmp", user="nobody",
                                 stop_signal="SIGINT", stop_grace_period=3_000_000_000, hostname="h"))
    assert config["Entrypoint"] == ["sh", "-c"] and config["Cmd"] == ["echo hi"] and config["Env"] == ["A=1"]
    assert config["WorkingDir"] == "/tmp" and config["User"] == "nobody" and config["Hostname"] == "h"
    assert config["StopSignal"] == "SIGINT" and config["StopTimeout"] == 3


def test_healthcheck_is_passed_with_docker_names() -> None:
    config = create_config(_task(healthcheck=HealthConfig(test=["CMD-SHELL", "true"], interval=1_000_000_000)))
    assert config["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 1_000_000_000}


@pytest.mark.parametrize(("image", "params"), [
    ("busybox", {"fromImage": "busybox", "tag": "latest"}),
    ("busybox:1.36", {"fromImage": "busybox", "tag": "1.36"}),
    ("reg:5000/team/app", {"fromImage": "reg:5000/team/app", "tag": "latest"}),
    ("reg:5000/team/app:v2", {"fromImage": "reg:5000/team/app", "tag": "v2"}),
    ("app@sha256:abc", {"fromImage": "app@sha256:abc"}),
])
def test_pull_names_the_image_as_docker_pull_does(image: str, params: dict[str, str]) -> None:
    assert pull_params(image) == params


def test_registry_auth_comes_from_the_specs_pull_options() -> None:
    assert registry_auth(_task()) == ""
    assert registry_auth(_task(pull_options=PullOptions(registry_auth="eyJ1Ijoi"))) == "eyJ1Ijoi"


def test_health_from_inspect_and_from_events() -> None:
    running = {"Id": "c1", "Config": {"Labels": {TASK_LABEL: "t", NODE_LABEL: "n"}},
               "State": {"Status": "running", "Pid": 7, "Health": {"Status": "starting"}}}
    assert observed(running).health is Health.STARTING
    assert observed({**running, "State": {"Status": "running"}}).health is Health.NONE
    event = {"id": "c1", "Action": "health_status: unhealthy", "Actor": {"Attributes": {TASK_LABEL: "t"}}}
    seen = from_event(event)
    assert (seen.phase, seen.health, seen.task_id) == (Phase.RUNNING, Health.UNHEALTHY, "t")
    died = from_event({"id": "c1", "Action": "die", "Actor": {"Attributes": {TASK_LABEL: "t", "exitCode": "3"}}})
    assert (died.phase, died.exit_code) == (Phase.EXITED, 3)
