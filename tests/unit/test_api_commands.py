"""The write decisions: what each request appends, under which compare-and-set, or why it is refused."""

from __future__ import annotations

import pytest

from schemas.events import (
    ClusterCreated,
    NodeJoined,
    NodeRemoved,
    NodeStatusChanged,
    NodeUpdated,
    ServiceCreated,
    ServiceRemoved,
    ServiceUpdated,
)
from schemas.node import NodeDescription, NodeSpec
from schemas.service import ContainerSpec, GlobalService, ReplicatedService, ServiceMode, ServiceSpec, TaskSpec
from services.api import commands
from services.api.errors import AlreadyExists, ApiError, InvalidParameter, NotFound, OutOfSequence, Unimplemented
from services.api.validation import normalize_service_spec
from services.kernel import subjects
from services.kernel.state import ClusterState
from tests.events import fold

WEB = normalize_service_spec(ServiceSpec(name="web", task_template=TaskSpec(container_spec=ContainerSpec(image="b"))))


def services() -> ClusterState:
    """web (s1, seq 1) updated once (seq 2), api (s2, seq 3)."""
    return fold([
        ServiceCreated(service_id="s1", spec=WEB),
        ServiceUpdated(service_id="s1", spec=WEB),
        ServiceCreated(service_id="s2", spec=ServiceSpec(name="api")),
    ])


def test_the_cluster_is_created_once_against_an_empty_cluster_subject() -> None:
    intent = commands.create_cluster(ClusterState(), "c", "w", "m")
    assert intent is not None and intent.expect_seq == 0 and intent.expect_subject == subjects.CLUSTER
    assert commands.create_cluster(fold([intent.event]), "c2", "w", "m") is None


def test_token_rotation_expects_the_clusters_version() -> None:
    state = fold([ClusterCreated(cluster_id="c")])
    intent = commands.rotate_token(state, 1, "worker", "tok")
    assert (intent.expect_seq, intent.expect_subject) == (1, subjects.CLUSTER)
    with pytest.raises(OutOfSequence):
        commands.rotate_token(state, 7, "worker", "tok")


def test_create_checks_every_service_spec_for_the_name() -> None:
    state = services()
    intent = commands.create_service(state, "s3", ServiceSpec(name="new"))
    assert isinstance(intent.event, ServiceCreated)
    assert (intent.expect_seq, intent.expect_subject) == (3, subjects.SERVICE_SPECS)
    with pytest.raises(AlreadyExists, match="service api already exists"):
        commands.create_service(state, "s3", ServiceSpec(name="api"))


def test_a_removed_services_name_is_free_again() -> None:
    state = fold([ServiceRemoved(service_id="s2")], services())
    assert commands.create_service(state, "s3", ServiceSpec(name="api")).expect_seq == 4


def test_update_expects_the_services_own_version() -> None:
    state = services()
    scaled = ServiceSpec(name="web", task_template=WEB.task_template,
                         mode=ServiceMode(replicated=ReplicatedService(replicas=3)))
    intent = commands.update_service(state, "web", 2, scaled, rollback=False)
    assert (intent.expect_seq, intent.expect_subject) == (2, subjects.service_all("s1"))
    assert isinstance(intent.event, ServiceUpdated) and intent.event.spec.mode == scaled.mode
    with pytest.raises(OutOfSequence):
        commands.update_service(state, "web", 1, scaled, rollback=False)


def test_an_update_without_a_name_keeps_the_name_and_is_normalized() -> None:
    intent = commands.update_service(services(), "s1", 2, ServiceSpec(task_template=WEB.task_template), False)
    assert isinstance(intent.event, ServiceUpdated) and intent.event.spec == WEB


def test_an_invalid_update_is_refused() -> None:
    with pytest.raises(InvalidParameter, match="mismatched Runtime"):
        commands.update_service(services(), "web", 2, ServiceSpec(name="web"), rollback=False)


def test_rename_is_checked_against_every_service_spec() -> None:
    state = services()
    renamed = ServiceSpec(name="front", task_template=WEB.task_template)
    intent = commands.update_service(state, "web", 2, renamed, rollback=False)
    assert (intent.expect_seq, intent.expect_subject) == (3, subjects.SERVICE_SPECS)
    with pytest.raises(AlreadyExists):
        commands.update_service(state, "web", 2, ServiceSpec(name="api", task_template=WEB.task_template), False)


def test_rollback_brings_back_the_previous_spec_and_ignores_the_body() -> None:
    intent = commands.update_service(services(), "web", 2, ServiceSpec(name="ignored"), rollback=True)
    assert isinstance(intent.event, ServiceUpdated) and intent.event.rollback and intent.event.spec == WEB
    with pytest.raises(InvalidParameter, match="service s2 does not have a previous spec"):
        commands.update_service(services(), "api", 3, ServiceSpec(), rollback=True)


def test_the_mode_cannot_change() -> None:
    global_web = ServiceSpec(name="web", task_template=WEB.task_template, mode=ServiceMode(global_=GlobalService()))
    with pytest.raises(Unimplemented, match="service mode change is not allowed"):
        commands.update_service(services(), "web", 2, global_web, rollback=False)


def test_remove_expects_the_services_version() -> None:
    intent = commands.remove_service(services(), "s1")
    assert intent.event == ServiceRemoved(service_id="s1")
    assert (intent.expect_seq, intent.expect_subject) == (2, subjects.service_all("s1"))
    with pytest.raises(NotFound):
        commands.remove_service(services(), "gone")


def nodes(*roles: str) -> ClusterState:
    return fold([NodeJoined(node_id=f"n{i}", spec=NodeSpec(role=role), description=NodeDescription(hostname=f"h{i}"))
                 for i, role in enumerate(roles)])


def test_node_update_expects_the_nodes_version() -> None:
    intent = commands.update_node(nodes("manager", "worker"), "h1", 2, NodeSpec(availability="drain"))
    assert intent.event == NodeUpdated(node_id="n1", spec=NodeSpec(availability="drain"))
    assert (intent.expect_seq, intent.expect_subject) == (2, subjects.node_all("n1"))
    with pytest.raises(OutOfSequence):
        commands.update_node(nodes("manager", "worker"), "n1", 1, NodeSpec())


def test_the_last_manager_cannot_be_demoted_but_one_of_two_can() -> None:
    with pytest.raises(InvalidParameter, match="attempting to demote the last manager of the swarm"):
        commands.update_node(nodes("manager", "worker"), "n0", 1, NodeSpec(role="worker"))
    assert commands.update_node(nodes("manager", "manager"), "n0", 1, NodeSpec(role="worker"))


@pytest.mark.parametrize(("roles", "down", "force", "refusal"), [
    (("manager",), False, True, "must be demoted to worker before removal"),
    (("manager", "worker"), False, False, "node n1 is not down and can't be removed"),
    (("manager", "worker"), False, True, None),
    (("manager", "worker"), True, False, None),
])
def test_node_removal_rules(roles: tuple[str, ...], down: bool, force: bool, refusal: str | None) -> None:
    state = nodes(*roles)
    target = f"n{len(roles) - 1}"
    if down:
        state = fold([NodeStatusChanged(node_id=target, state="down")], state)
    if refusal is None:
        intent = commands.remove_node(state, target, force)
        assert intent.event == NodeRemoved(node_id=target) and intent.expect_subject == subjects.node_all(target)
    else:
        with pytest.raises(ApiError, match=refusal):
            commands.remove_node(state, target, force)
