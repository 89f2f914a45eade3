"""Filters, lookups, versions and request-body reading: the pure parts of answering a request."""

from __future__ import annotations

from typing import Any

import pytest
from msgspec import inspect

from schemas.base import Version
from schemas.events import NodeJoined, ServiceCreated, ServiceUpdated, TaskAssigned, TaskCreated
from schemas.node import NodeDescription, NodeSpec
from schemas.service import (
    ContainerSpec,
    Placement,
    ReplicatedService,
    ServiceMode,
    ServiceSpec,
    TaskSpec,
)
from schemas.task import Task
from services.api import filters, versioning
from services.api.errors import InvalidParameter, NotFound
from services.api.lookup import find_node, find_service, find_task
from services.api.wire import unknown_fields
from services.kernel.state import ClusterState
from tests.events import fold


def cluster() -> ClusterState:
    return fold([
        ServiceCreated(service_id="aaa111", spec=ServiceSpec(name="web", labels={"tier": "front"})),
        ServiceCreated(service_id="aab222", spec=ServiceSpec(name="api")),
        NodeJoined(node_id="n1xx", spec=NodeSpec(role="manager", name="primary"),
                   description=NodeDescription(hostname="host-a")),
        NodeJoined(node_id="n2yy", spec=NodeSpec(labels={"dc": "east"}),
                   description=NodeDescription(hostname="host-b")),
        TaskCreated(task=Task(id="t1", service_id="aaa111", slot=1, labels={"k": "v"}, spec_version=Version(1))),
        TaskAssigned(task=Task(id="t1", service_id="aaa111", slot=1), node_id="n2yy"),
    ])


# -- parsing -------------------------------------------------------------------------------------


def test_both_filter_forms_parse_to_sets() -> None:
    assert filters.parse('{"name":{"web":true,"api":false}}', filters.SERVICE_KEYS) == {"name": {"web", "api"}}
    assert filters.parse('{"name":["web"]}', filters.SERVICE_KEYS) == {"name": {"web"}}
    assert filters.parse(None, filters.SERVICE_KEYS) == {} == filters.parse("", filters.SERVICE_KEYS)


@pytest.mark.parametrize(("raw", "message"), [
    ('{"bogus":{"x":true}}', "Invalid filter 'bogus'"),
    ("{", "invalid filters:"),
    ("[]", "invalid filters: expected a JSON object"),
    ('{"name":"web"}', "the values of 'name' must be a list or a map of strings"),
    ('{"name":[1]}', "the values of 'name' must be a list or a map of strings"),
])
def test_bad_filters_are_400s(raw: str, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message.replace("(", r"\(")):
        filters.parse(raw, filters.SERVICE_KEYS)


def test_choices_are_checked_with_dockers_messages() -> None:
    with pytest.raises(InvalidParameter, match="Invalid desired-state filter: 'x'"):
        filters.check_task_filters({"desired-state": {"running", "x"}})
    with pytest.raises(InvalidParameter, match="Invalid membership filter: 'gone'"):
        filters.check_node_filters({"membership": {"gone"}})
    filters.check_node_filters({"role": {"manager"}, "membership": {"accepted"}})


# -- matching ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("wanted", "names"), [
    ({}, ["api", "web"]),
    ({"id": {"aa"}}, ["api", "web"]),
    ({"id": {"aab"}}, ["api"]),
    ({"name": {"w"}}, ["web"]),
    ({"label": {"tier"}}, ["web"]),
    ({"label": {"tier=front"}}, ["web"]),
    ({"label": {"tier=back"}}, []),
    ({"label": {"tier", "other"}}, []),
    ({"mode": {"replicated"}}, ["api", "web"]),
    ({"mode": {"global"}}, []),
    ({"runtime": {"container"}}, ["api", "web"]),
])
def test_service_matching(wanted: filters.Filters, names: list[str]) -> None:
    state = cluster()
    assert sorted(s.spec.name for s in state.services.values() if filters.service_matches(s, wanted)) == names


@pytest.mark.parametrize(("wanted", "hit"), [
    ({"name": {"web.1.t"}}, True),
    ({"name": {"web.2"}}, False),
    ({"label": {"k=v"}}, True),
    ({"service": {"aaa111"}}, True),
    ({"service": {"aab222"}}, False),
    ({"node": {"n2yy"}}, True),
    ({"desired-state": {"running"}}, True),
    ({"desired-state": {"shutdown"}}, False),
    ({"_up-to-date": {"true"}}, True),
])
def test_task_matching(wanted: filters.Filters, hit: bool) -> None:
    state = cluster()
    task = state.tasks["t1"]
    assert filters.task_matches(task, wanted, state.services["aaa111"], state.nodes["n2yy"]) is hit


def test_a_task_of_a_removed_service_is_never_up_to_date() -> None:
    task = cluster().tasks["t1"]
    assert not filters.task_matches(task, {"_up-to-date": {"true"}}, None, None)
    assert filters.task_matches(task, {}, None, None)


def _updated(template: TaskSpec, *, replicas: int = 1) -> ClusterState:
    """Service s with a task created from `BASE_TEMPLATE` on node n (labelled dc=east), then a spec update."""
    mode = ServiceMode(replicated=ReplicatedService(replicas=replicas))
    return fold([
        ServiceCreated(service_id="s", spec=ServiceSpec(name="s", task_template=BASE_TEMPLATE)),
        NodeJoined(node_id="n", spec=NodeSpec(labels={"dc": "east"}), description=NodeDescription()),
        TaskCreated(task=Task(id="t", service_id="s", slot=1, spec=BASE_TEMPLATE, spec_version=Version(1))),
        ServiceUpdated(service_id="s", spec=ServiceSpec(name="s", task_template=template, mode=mode)),
    ])


BASE_TEMPLATE = TaskSpec(container_spec=ContainerSpec(image="busybox"))


@pytest.mark.parametrize(("template", "current"), [
    (BASE_TEMPLATE, True),
    (TaskSpec(container_spec=ContainerSpec(image="busybox:1.36")), False),
    (TaskSpec(container_spec=ContainerSpec(image="busybox"), force_update=1), False),
    (TaskSpec(container_spec=ContainerSpec(image="busybox"),
              placement=Placement(constraints=["node.labels.dc==east"])), True),
    (TaskSpec(container_spec=ContainerSpec(image="busybox"),
              placement=Placement(constraints=["node.labels.dc==west"])), False),
])
def test_up_to_date_means_the_task_spec_is_not_dirty(template: TaskSpec, current: bool) -> None:
    state = _updated(template, replicas=5)
    svc, task = state.services["s"], state.tasks["t"]
    assert svc.spec_version != task.spec_version
    assert filters.up_to_date(task, svc, state.nodes["n"]) is current


@pytest.mark.parametrize(("wanted", "ids"), [
    ({"name": {"host-"}}, ["n1xx", "n2yy"]),
    ({"name": {"prim"}}, ["n1xx"]),
    ({"role": {"worker"}}, ["n2yy"]),
    ({"node.label": {"dc=east"}}, ["n2yy"]),
    ({"label": {"dc"}}, []),
    ({"membership": {"accepted"}}, ["n1xx", "n2yy"]),
    ({"membership": {"pending"}}, []),
])
def test_node_matching(wanted: filters.Filters, ids: list[str]) -> None:
    assert sorted(n.id for n in cluster().nodes.values() if filters.node_matches(n, wanted)) == ids


# -- lookup --------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["aaa111", "web", "aaa"])
def test_services_are_found_by_id_name_or_unique_prefix(ref: str) -> None:
    assert find_service(cluster(), ref).id == "aaa111"


def test_a_shared_prefix_is_ambiguous_and_a_miss_is_404() -> None:
    with pytest.raises(InvalidParameter, match=r"service aa is ambiguous \(2 matches found\)"):
        find_service(cluster(), "aa")
    with pytest.raises(NotFound, match="service nope not found"):
        find_service(cluster(), "nope")
    with pytest.raises(NotFound, match="service  not found"):
        find_service(cluster(), "")


@pytest.mark.parametrize("ref", ["n1xx", "host-a", "primary", "n1"])
def test_nodes_are_found_by_id_hostname_name_or_prefix(ref: str) -> None:
    assert find_node(cluster(), ref).id == "n1xx"


def test_tasks_are_found_by_id_or_prefix_only() -> None:
    assert find_task(cluster(), "t").id == "t1"
    with pytest.raises(NotFound, match=r"task web\.1 not found"):
        find_task(cluster(), "web.1")


# -- versions ------------------------------------------------------------------------------------


def test_version_checks() -> None:
    versioning.check("1.41")
    versioning.check("1.24")
    with pytest.raises(InvalidParameter, match=r"client version 1\.42 is too new"):
        versioning.check("1.42")
    with pytest.raises(InvalidParameter, match=r"client version 1\.11 is too old"):
        versioning.check("1.11")
    assert versioning.at_least(None, "1.41") and versioning.at_least("1.41", "1.41")
    assert not versioning.at_least("1.40", "1.41") and versioning.at_least("1.100", "1.41") is True


def test_route_templates_lose_their_version_prefix() -> None:
    assert versioning.unversioned("/v{version:\\d+\\.\\d+}/services/{id}") == "/services/{id}"
    assert versioning.unversioned("/services") == "/services"


# -- unknown fields ------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "found"), [
    ({"Name": "x", "TaskTemplate": {"ContainerSpec": {"Image": "i"}}}, []),
    ({"Nmae": "x"}, ["$.Nmae"]),
    ({"Nmae": None}, []),
    ({"TaskTemplate": {"Placement": {"Preferences": [{"Spread": {"SpreadDescriptor": "a", "X": 1}}]}}},
     ["$.TaskTemplate.Placement.Preferences[0].Spread.X"]),
    ({"Labels": {"anything": "goes"}, "TaskTemplate": {"ContainerSpec": {"Privileges": {"Free": {"Form": 1}}}}}, []),
    ({"Mode": "replicated"}, []),
])
def test_unknown_fields_are_found_with_their_path(raw: dict[str, Any], found: list[str]) -> None:
    assert list(unknown_fields(raw, inspect.type_info(ServiceSpec))) == found
