"""What clients are shown: service status counts, defaults, task and node views, system documents."""

from __future__ import annotations

import msgspec
import pytest

from schemas.events import (
    AnyEvent,
    NodeJoined,
    NodeStatusChanged,
    ServiceCreated,
    TaskCreated,
    TaskDesiredStateChanged,
    TaskStatusChanged,
)
from schemas.node import NodeDescription, NodeResources, NodeSpec
from schemas.service import (
    ContainerSpec,
    Endpoint,
    EndpointSpec,
    GlobalJob,
    GlobalService,
    PortConfig,
    ReplicatedJob,
    ReplicatedService,
    RestartPolicy,
    ServiceMode,
    ServiceSpec,
    ServiceStatus,
    TaskSpec,
    UpdateConfig,
)
from schemas.task import Task, TaskState, TaskStatus
from services.api.defaults import RESTART_POLICY, UPDATE_CONFIG, insert_defaults
from services.api.system import info_view, swarm_view, version_view
from services.api.views import node_view, self_node_id, service_status, service_view, task_view
from services.kernel.state import Cluster, ClusterState
from tests.events import fold

CONTAINER = TaskSpec(container_spec=ContainerSpec(image="busybox"))


def with_tasks(mode: ServiceMode, states: list[tuple[TaskState, TaskState]]) -> ClusterState:
    """One service in `mode` with a task per (observed, desired) pair."""
    events: list[AnyEvent] = [ServiceCreated(service_id="s", spec=ServiceSpec(name="s", mode=mode,
                                                                            task_template=CONTAINER))]
    for i, (observed, desired) in enumerate(states):
        events += [TaskCreated(task=Task(id=f"t{i}", service_id="s", slot=i + 1)),
                   TaskStatusChanged(task_id=f"t{i}", status=TaskStatus(state=observed)),
                   TaskDesiredStateChanged(task_id=f"t{i}", desired_state=desired)]
    return fold(events)


R, S, C = TaskState.RUNNING, TaskState.SHUTDOWN, TaskState.COMPLETE


@pytest.mark.parametrize(("mode", "states", "expected"), [
    (ServiceMode(replicated=ReplicatedService(replicas=3)), [(R, R), (R, R), (TaskState.PENDING, R)], (2, 3, 0)),
    (ServiceMode(replicated=ReplicatedService(replicas=2)), [(R, R), (R, S)], (2, 2, 0)),
    (ServiceMode(global_=GlobalService()), [(R, R), (TaskState.STARTING, R), (R, S)], (2, 2, 0)),
    (ServiceMode(replicated_job=ReplicatedJob(max_concurrent=2, total_completions=5)), [(C, C), (R, C)], (1, 2, 1)),
    (ServiceMode(replicated_job=ReplicatedJob(max_concurrent=4, total_completions=5)), [(C, C), (C, C)], (0, 3, 2)),
    (ServiceMode(global_job=GlobalJob()), [(C, C), (R, C), (TaskState.PENDING, C)], (1, 2, 1)),
])
def test_service_status_follows_dockerds_rules(
    mode: ServiceMode, states: list[tuple[TaskState, TaskState]], expected: tuple[int, int, int]
) -> None:
    state = with_tasks(mode, states)
    status = service_status(state, state.services["s"])
    assert (status.running_tasks, status.desired_tasks, status.completed_tasks) == expected


def test_service_view_adds_status_or_defaults_without_touching_the_projection() -> None:
    state = with_tasks(ServiceMode(replicated=ReplicatedService(replicas=1)), [])
    svc = state.services["s"]
    shown = service_view(svc, status=ServiceStatus(desired_tasks=1), defaults=True)
    assert shown.service_status == ServiceStatus(desired_tasks=1) and shown.spec.update_config == UPDATE_CONFIG
    assert svc.service_status is None and svc.spec.update_config is None


def test_defaults_fill_only_what_is_absent() -> None:
    own = UpdateConfig(parallelism=2)
    spec = ServiceSpec(update_config=own, task_template=TaskSpec(
        container_spec=ContainerSpec(image="x", stop_grace_period=1), restart_policy=RestartPolicy(condition="none")))
    filled = insert_defaults(spec)
    assert filled.update_config == own and filled.rollback_config == UPDATE_CONFIG
    assert filled.task_template is not None and filled.task_template.container_spec is not None
    assert filled.task_template.container_spec.stop_grace_period == 1
    assert filled.task_template.restart_policy == RestartPolicy(condition="none", delay=RESTART_POLICY.delay)
    bare = insert_defaults(ServiceSpec())
    assert bare.task_template is not None and bare.task_template.restart_policy == RESTART_POLICY
    assert msgspec.to_builtins(bare.task_template)["Resources"] == {"Limits": {}, "Reservations": {}}


def test_task_view_always_has_a_container_spec() -> None:
    bare = Task(id="t")
    assert task_view(bare).spec.container_spec == ContainerSpec() and bare.spec.container_spec is None
    full = Task(id="t", spec=CONTAINER)
    assert task_view(full) is full


def nodes() -> ClusterState:
    return fold([
        NodeJoined(node_id="w-old", spec=NodeSpec(), description=NodeDescription(hostname="w")),
        NodeJoined(node_id="m-down", spec=NodeSpec(role="manager"), description=NodeDescription(hostname="m0")),
        NodeJoined(node_id="m-ready", spec=NodeSpec(role="manager"), addr="10.1.1.1",
                   description=NodeDescription(hostname="m1", resources=NodeResources(nano_cpus=4_000_000_000,
                                                                                      memory_bytes=1 << 30))),
        NodeStatusChanged(node_id="m-down", state="down"),
    ])


def test_self_is_the_configured_node_else_the_oldest_ready_manager_else_the_oldest_node() -> None:
    state = nodes()
    assert self_node_id(state, "chosen") == "chosen"
    assert self_node_id(state, "") == "m-ready"
    lone = fold([NodeJoined(node_id="only", spec=NodeSpec(), description=NodeDescription())])
    assert self_node_id(lone, "") == "only"
    assert self_node_id(ClusterState(), "") == ""


def test_node_view_spells_out_role_availability_and_manager_status() -> None:
    state = nodes()
    worker = node_view(state.nodes["w-old"], "m-ready")
    assert worker["Spec"] == {"Name": None, "Labels": {}, "Role": "worker", "Availability": "active"}
    assert worker["ManagerStatus"] is None
    leader = node_view(state.nodes["m-ready"], "m-ready")["ManagerStatus"]
    assert leader == {"Leader": True, "Reachability": "reachable", "Addr": "10.1.1.1:2377"}
    down = node_view(state.nodes["m-down"], "m-ready")["ManagerStatus"]
    assert down == {"Leader": False, "Reachability": "unreachable", "Addr": ""}


def test_info_describes_the_self_node_and_the_swarm() -> None:
    state = nodes()
    info = info_view(state, "m-ready")
    assert info["Name"] == "m1" and info["NCPU"] == 4 and info["MemTotal"] == 1 << 30
    swarm = info["Swarm"]
    assert (swarm["NodeID"], swarm["NodeAddr"], swarm["Nodes"], swarm["Managers"]) == ("m-ready", "10.1.1.1", 3, 2)
    assert swarm["Cluster"] is None and swarm["LocalNodeState"] == "active" and swarm["ControlAvailable"] is True


def test_swarm_view_hides_tokens_unless_asked() -> None:
    cluster = Cluster(id="c", worker_token="w", manager_token="m")
    assert swarm_view(cluster, tokens=True)["JoinTokens"] == {"Worker": "w", "Manager": "m"}
    assert "JoinTokens" not in swarm_view(cluster, tokens=False)


def test_version_view_advertises_1_41() -> None:
    version = version_view()
    assert version["ApiVersion"] == "1.41" and version["Components"][0]["Details"]["ApiVersion"] == "1.41"


def test_published_ports_show_in_the_endpoint() -> None:
    ports = [PortConfig(target_port=80, published_port=8080), PortConfig(target_port=81),
             PortConfig(target_port=53, published_port=53, protocol="udp", publish_mode="host")]
    state = fold([ServiceCreated(service_id="s", spec=ServiceSpec(endpoint_spec=EndpointSpec(ports=ports)))])
    shown = service_view(state.services["s"]).endpoint
    assert shown is not None and shown.ports == [
        PortConfig(target_port=80, published_port=8080, protocol="tcp", publish_mode="ingress"), ports[2]]
    bare = fold([ServiceCreated(service_id="s", spec=ServiceSpec())])
    assert service_view(bare.services["s"]).endpoint == Endpoint()
