"""Published ports: the API's assignment and conflict rules, the agent's node-local ports (and its
worker keeping them apart), and the routing mesh's table and rotation, as functions of a folded cluster."""

from __future__ import annotations

import itertools

import pytest
from msgspec.structs import replace

from schemas.events import NodeJoined, ServiceCreated, TaskDesiredStateChanged, TaskStatusChanged
from schemas.node import NodeDescription, NodeSpec
from schemas.service import Endpoint, EndpointSpec, PortConfig, ServiceSpec
from schemas.task import PortStatus, Task, TaskState, TaskStatus
from services.agent.executors.sim import SimExecutor
from services.agent.ingress.rotation import RoundRobin
from services.agent.ingress.table import Backend, build
from services.agent.ports import PICKS, node_ports, pick_avoiding, port_env
from services.agent.worker import Worker
from services.api.errors import InvalidParameter
from services.api.ports import assign
from tests.world import World

_WEB = Endpoint(ports=[PortConfig(target_port=80, published_port=8080, protocol="tcp", publish_mode="ingress"),
                       PortConfig(target_port=53, published_port=53, protocol="udp", publish_mode="host")])
"""A service publishing an ingress port and a host-mode port."""


def _spec(name: str, *ports: PortConfig) -> ServiceSpec:
    return ServiceSpec(name=name, endpoint_spec=EndpointSpec(ports=list(ports)))


def _create(w: World, name: str, *ports: PortConfig) -> str:
    spec = _spec(name, *ports)
    w.fold(ServiceCreated(service_id=name, spec=spec, ports=assign(w.state, name, spec)))
    return name


def _ports(w: World, name: str) -> list[PortConfig]:
    endpoint = w.state.services[name].endpoint
    return (endpoint.ports or []) if endpoint is not None else []


def test_an_ingress_port_without_a_number_gets_the_lowest_free_one_of_swarms_range() -> None:
    w = World()
    _create(w, "a", PortConfig(target_port=80))
    _create(w, "b", PortConfig(target_port=80), PortConfig(target_port=53, protocol="udp"))
    assert [p.published_port for p in _ports(w, "a")] == [30000]
    assert [(p.published_port, p.protocol, p.publish_mode) for p in _ports(w, "b")] == [
        (30001, "tcp", "ingress"), (30002, "udp", "ingress")]
    assert w.state.services["a"].spec.endpoint_spec == EndpointSpec(ports=[PortConfig(target_port=80)]), \
        "the spec stays as the user wrote it; the assigned number lives in Endpoint.Ports"


def test_an_update_keeps_the_assigned_number() -> None:
    w = World()
    _create(w, "a", PortConfig(target_port=80))
    _create(w, "b", PortConfig(target_port=80))
    svc = w.state.services["a"]
    spec = replace(svc.spec, labels={"x": "y"})
    assert [p.published_port for p in assign(w.state, "a", spec, svc) or []] == [30000]


def test_a_port_used_by_another_service_is_refused_with_swarms_message() -> None:
    w = World()
    _create(w, "web", PortConfig(target_port=80, published_port=8080))
    _create(w, "edge", PortConfig(target_port=80, published_port=9090, publish_mode="host"))
    with pytest.raises(InvalidParameter) as e:
        assign(w.state, "x", _spec("x", PortConfig(target_port=81, published_port=8080)))
    assert e.value.message == ("rpc error: code = InvalidArgument desc = port '8080' is already in use by "
                               "service 'web' (web) as an ingress port")
    with pytest.raises(InvalidParameter) as e:
        assign(w.state, "x", _spec("x", PortConfig(target_port=81, published_port=9090)))
    assert "as a host-published port" in e.value.message
    # Host mode beside host mode is the scheduler's business; another protocol is another port.
    assign(w.state, "x", _spec("x", PortConfig(target_port=81, published_port=9090, publish_mode="host")))
    assign(w.state, "x", _spec("x", PortConfig(target_port=81, published_port=8080, protocol="udp")))
    # A service does not conflict with itself on update.
    assign(w.state, "web", w.state.services["web"].spec, w.state.services["web"])


def test_the_agent_gives_ingress_ports_a_free_port_and_host_ports_their_published_one() -> None:
    ports = node_ports(Task(endpoint=_WEB), lambda proto: 40000 if proto == "tcp" else 40001)
    assert [(p.target_port, p.published_port, p.protocol) for p in ports or []] == [(80, 40000, "tcp"),
                                                                                    (53, 53, "udp")]
    assert node_ports(Task(), lambda proto: 1) is None
    task = Task(status=TaskStatus(port_status=PortStatus(ports=ports)))
    assert port_env(task, "127.0.0.2") == {"SHOAL_PORT_80": "40000", "SHOAL_PORT_53": "53", "PORT": "40000",
                                           "SHOAL_NODE_ADDR": "127.0.0.2"}


def test_a_port_a_live_task_holds_is_picked_again_but_a_host_port_stays() -> None:
    offered = itertools.chain([40000, 40000], itertools.count(40001))
    picks: list[list[PortConfig] | None] = []

    def pick() -> list[PortConfig] | None:
        picks.append(node_ports(Task(endpoint=_WEB), lambda proto: next(offered)))
        return picks[-1]

    ports = pick_avoiding(pick, {("tcp", 40000), ("udp", 53)})
    assert [p.published_port for p in ports or []] == [40001, 53], "the kernel offered 40000 twice"
    assert len(picks) == 3, "the host port 53 another task holds is the service's: picking again cannot move it"
    stuck = pick_avoiding(lambda: node_ports(Task(endpoint=_WEB), lambda proto: 40000), {("tcp", 40000)})
    assert [p.published_port for p in stuck or []] == [40000, 53], f"after {PICKS} picks the last one stands"


async def test_the_worker_gives_two_live_tasks_different_ports_when_the_kernel_offers_one_twice() -> None:
    offered = itertools.chain([40000, 40000], itertools.count(40001))
    reported: dict[str, TaskStatus] = {}
    worker = Worker(SimExecutor(), lambda task, status: reported.__setitem__(task.id, status),
                    ports_for=lambda task: node_ports(task, lambda proto: next(offered)))
    await worker.begin([])
    try:
        for task_id in ("t1", "t2"):
            worker.update(Task(id=task_id, node_id="n1", endpoint=_WEB, desired_state=TaskState.RUNNING,
                               status=TaskStatus(state=TaskState.ASSIGNED)))
        ingress = {t: (s.port_status.ports or [])[0].published_port for t, s in reported.items()}
        assert ingress == {"t1": 40000, "t2": 40001}
    finally:
        await worker.close()


def _cluster() -> World:
    w = World()
    for i in (1, 2):
        w.fold(NodeJoined(node_id=f"n{i}", spec=NodeSpec(), description=NodeDescription(), addr=f"127.0.0.{i}"))
        w.node_status(f"n{i}", "ready")
    _create(w, "web", PortConfig(target_port=80, published_port=8080))
    w.scale("web", 3)
    return w


def _run(w: World, task_id: str, node: str, local_port: int) -> None:
    w.assign(task_id, node)
    ports = [PortConfig(protocol="tcp", target_port=80, published_port=local_port, publish_mode="ingress")]
    w.fold(TaskStatusChanged(task_id=task_id, status=TaskStatus(state=TaskState.RUNNING,
                                                                port_status=PortStatus(ports=ports))))


def test_the_table_routes_a_published_port_to_running_tasks_on_ready_nodes() -> None:
    w = _cluster()
    w.settle()
    a, b, c = (t.id for t in w.tasks("web"))
    _run(w, a, "n1", 41000)
    _run(w, b, "n2", 41001)
    route = build(w.state)[("tcp", 8080)]
    assert route.service_name == "web"
    assert route.backends == (Backend("n1", a, "127.0.0.1", 41000), Backend("n2", b, "127.0.0.2", 41001))

    w.fold(TaskDesiredStateChanged(task_id=a, desired_state=TaskState.SHUTDOWN))
    assert [x.task_id for x in build(w.state)[("tcp", 8080)].backends] == [b], "desired shutdown leaves rotation"
    w.node_status("n2", "down")
    assert build(w.state)[("tcp", 8080)].backends == (), "a down node's tasks are skipped"
    assert c not in {x.task_id for x in route.backends}, "a task not running yet is no backend"


def test_round_robin_starts_each_connection_one_further_and_lists_the_rest_as_fallbacks() -> None:
    w = _cluster()
    w.settle()
    for i, t in enumerate(w.tasks("web")):
        _run(w, t.id, "n1", 41000 + i)
    route = build(w.state)[("tcp", 8080)]
    rr = RoundRobin()
    orders = [[b.port for b in rr.order(route)] for _ in range(4)]
    assert sorted(orders[0]) == [41000, 41001, 41002]
    assert orders[1] == [*orders[0][1:], orders[0][0]]
    assert orders[2] == [orders[0][2], *orders[0][:2]]
    assert orders[3] == orders[0]
