"""What each write request decides, as pure functions of the cluster state.

Each returns the `Intent` to append, with the compare-and-set that makes it safe, or raises the
`ApiError` Docker would answer with. The committer calls them again on a fresher state after a
conflict, so every check here is also the re-check after a race.

Compare-and-set scopes: creating or renaming a service is checked against every service's spec
leaf (names are unique across services); other service and node writes against the object's own
subjects, whose last sequence is the object's `Version.Index` (the `?version=` clients send).
"""

from __future__ import annotations

from msgspec.structs import replace

from schemas.cluster import SwarmSpec
from schemas.events import (
    ClusterCreated,
    ClusterSpecUpdated,
    JoinTokenRotated,
    NodeRemoved,
    NodeUpdated,
    ServiceCreated,
    ServiceRemoved,
    ServiceUpdated,
)
from schemas.node import Node, NodeSpec
from schemas.service import Service, ServiceSpec
from services.api.errors import AlreadyExists, OutOfSequence, Unavailable, Unimplemented, failed_precondition, rpc
from services.api.lookup import find_node, find_service
from services.api.modes import mode_name
from services.api.ports import assign
from services.api.validation import normalize_service_spec, validate_service_spec
from services.kernel import subjects
from services.kernel.state import ClusterState
from services.kernel.writer import Intent

MANAGER = "manager"
WORKER = "worker"


def create_cluster(state: ClusterState, cluster_id: str, worker_token: str, manager_token: str) -> Intent | None:
    """Nothing to do once any gateway has created the cluster; the first create wins the CAS."""
    if state.cluster is not None:
        return None
    event = ClusterCreated(cluster_id=cluster_id, worker_token=worker_token, manager_token=manager_token)
    return Intent(event, expect_seq=0, expect_subject=subjects.CLUSTER)


def rotate_token(state: ClusterState, version: int, role: str, token: str) -> Intent:
    _check_cluster_version(state, version)
    return Intent(JoinTokenRotated(role=role, token=token), expect_seq=version, expect_subject=subjects.CLUSTER)


def update_cluster_spec(state: ClusterState, version: int, spec: SwarmSpec) -> Intent:
    _check_cluster_version(state, version)
    return Intent(ClusterSpecUpdated(spec=spec), expect_seq=version, expect_subject=subjects.CLUSTER)


def _check_cluster_version(state: ClusterState, version: int) -> None:
    if state.cluster is None:
        raise Unavailable("This node is not part of a swarm")
    if version != state.cluster.version.index:
        raise OutOfSequence()


# -- services ------------------------------------------------------------------------------------


def create_service(state: ClusterState, service_id: str, spec: ServiceSpec) -> Intent:
    """`spec` is validated and normalized already (it does not depend on the state)."""
    _check_name_free(state, spec.name)
    return Intent(
        ServiceCreated(service_id=service_id, spec=spec, ports=assign(state, service_id, spec)),
        expect_seq=state.last_service_spec_seq,
        expect_subject=subjects.SERVICE_SPECS,
    )


def update_service(state: ClusterState, ref: str, version: int, spec: ServiceSpec, rollback: bool) -> Intent:
    """A full replacement of the spec, or with `rollback` the previous spec back (the body is ignored)."""
    svc = find_service(state, ref)
    if version != svc.version.index:
        raise OutOfSequence()
    new = _previous_spec(svc) if rollback else _prepared(spec, svc)
    if mode_name(new) != mode_name(svc.spec):
        raise Unimplemented(rpc("Unimplemented", "service mode change is not allowed"))
    ports = assign(state, svc.id, new, svc)
    event = ServiceUpdated(service_id=svc.id, spec=new, rollback=rollback, ports=ports)
    if new.name != svc.spec.name or ports != (svc.endpoint.ports if svc.endpoint else None):
        # Names and published ports are unique across services: checked against every service's spec.
        if new.name != svc.spec.name:
            _check_name_free(state, new.name)
        return Intent(event, expect_seq=state.last_service_spec_seq, expect_subject=subjects.SERVICE_SPECS)
    return Intent(event, expect_seq=version, expect_subject=subjects.service_all(svc.id))


def remove_service(state: ClusterState, ref: str) -> Intent:
    svc = find_service(state, ref)
    return Intent(
        ServiceRemoved(service_id=svc.id),
        expect_seq=svc.version.index,
        expect_subject=subjects.service_all(svc.id),
    )


def _prepared(spec: ServiceSpec, svc: Service) -> ServiceSpec:
    """An update without a name keeps the service's name rather than failing validation."""
    spec = spec if spec.name else replace(spec, name=svc.spec.name)
    validate_service_spec(spec)
    return normalize_service_spec(spec)


def _previous_spec(svc: Service) -> ServiceSpec:
    if svc.previous_spec is None:
        raise failed_precondition(f"service {svc.id} does not have a previous spec")
    return svc.previous_spec


def _check_name_free(state: ClusterState, name: str) -> None:
    if state.service_by_name.get(name, "") in state.services:
        raise AlreadyExists(
            rpc("AlreadyExists", f"name conflicts with an existing object: service {name} already exists")
        )


# -- nodes ---------------------------------------------------------------------------------------


def update_node(state: ClusterState, ref: str, version: int, spec: NodeSpec) -> Intent:
    """`spec` is validated already; demoting the last manager is refused as swarmkit does."""
    node = find_node(state, ref)
    if version != node.version.index:
        raise OutOfSequence()
    if node.spec.role == MANAGER and spec.role == WORKER and _managers(state) == 1:
        raise failed_precondition("attempting to demote the last manager of the swarm")
    return Intent(NodeUpdated(node_id=node.id, spec=spec), expect_seq=version,
                  expect_subject=subjects.node_all(node.id))


def remove_node(state: ClusterState, ref: str, force: bool) -> Intent:
    """Managers must be demoted first (so the last one can never go); a ready node needs `force`."""
    node = find_node(state, ref)
    _check_removable(node, force)
    return Intent(NodeRemoved(node_id=node.id), expect_seq=node.version.index,
                  expect_subject=subjects.node_all(node.id))


def _check_removable(node: Node, force: bool) -> None:
    if node.spec.role == MANAGER:
        raise failed_precondition(
            f"node {node.id} is a cluster manager and is a member of the raft cluster. "
            "It must be demoted to worker before removal"
        )
    if node.status.state == "ready" and not force:
        raise failed_precondition(f"node {node.id} is not down and can't be removed")


def _managers(state: ClusterState) -> int:
    return sum(1 for n in state.nodes.values() if n.spec.role == MANAGER)
