"""The orchestrator's decision: from the services and nodes touched since the last pass, the events
that move the cluster toward what its services ask for. Pure: state and time in, intents out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.service import Service
from services.kernel.reconcile import Decision
from services.kernel.state import ClusterState
from services.orchestrator import cluster_spec, global_, jobs, orphans, rebalance, replicated, tasks, update
from services.orchestrator.nodes import is_invalid, takes_new_tasks
from services.orchestrator.pacing import DEFAULT_UNPLACED_LIMIT, Pacing

DEFAULT_HISTORY_LIMIT = 5


@dataclass(frozen=True, slots=True)
class Settings:
    history_limit: int = DEFAULT_HISTORY_LIMIT
    """Tasks kept per slot, the live one included (swarmkit's TaskHistoryRetentionLimit); negative: all."""
    orphan_after_ns: int = orphans.ORPHAN_AFTER_S * 1_000_000_000
    """How long a node stays down before its tasks are `orphaned` (swarmkit: 24 h)."""
    rebalance: bool = False
    """Rebalance every replicated service, not only those labelled `shoal.rebalance=true`."""
    unplaced_limit: int = DEFAULT_UNPLACED_LIMIT
    """Create tasks for new slots only while fewer tasks wait for the scheduler (`pacing.py`); 0: no limit."""


def decide(state: ClusterState, services: set[str], nodes: set[str], now_ns: int,
           settings: Settings = Settings(), pacing: Pacing | None = None, held: Sequence[str] = ()) -> Decision:
    """`held`: services an earlier pass cut short (`pacing.py`), decided first while there is room;
    `pacing` collects the ones this pass cuts short."""
    out = Decision()
    pacing = pacing or Pacing.of(state, settings.unplaced_limit)
    limit = cluster_spec.history_limit(state, settings.history_limit)
    whole = services | _hit_by_nodes(state, nodes)
    decided = set(whole)
    for service_id in [*(s for s in held if s in whole or s in state.services), *sorted(whole.difference(held))]:
        if service_id in whole or not pacing.full():
            decided.add(service_id)
            _service(state, service_id, now_ns, limit, settings, pacing, out)
        else:
            pacing.hold(service_id)  # deciding it would only hold it again, at the cost of a look at its tasks
    if nodes:
        for service in state.services.values():
            if service.id not in decided and is_global(service):
                global_.reconcile(state, service, now_ns, limit, pacing, out, only_nodes=nodes)
            elif service.id not in decided and _is_global_job(service):
                jobs.reconcile(state, service, now_ns, limit, pacing, out)
    if any(_wants_share(state, n, settings) for n in nodes):
        for service in state.services.values():
            if service.id not in decided and _rebalances(service, settings):
                rebalance.reconcile(state, service, now_ns, out)
    out.extend(orphans.decide(state, nodes, now_ns, settings.orphan_after_ns))
    return out


class Orchestrator:
    """The orchestrator's `Decide`: `decide` plus the services it held back, from one pass to the next."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.held: list[str] = []

    def __call__(self, state: ClusterState, services: set[str], nodes: set[str], now_ns: int) -> Decision:
        progressed, state.progressed_services = state.progressed_services, set()
        if progressed:
            services = services | {s for s in progressed if follows_progress(state, s, self.settings)}
        pacing = Pacing.of(state, self.settings.unplaced_limit)
        decision = decide(state, services, nodes, now_ns, self.settings, pacing, self.held)
        self.held = list(pacing.held)
        return decision


def follows_progress(state: ClusterState, service_id: str, settings: Settings) -> bool:
    """Whether a task of this service moving forward (created, assigned, pending, at most `running`)
    can call for a decision: a rolling update or rollback waits for its new tasks to run, a
    rebalance moves tasks as others start, and global services and jobs are decided per node or per
    run. A replicated service at rest has nothing to do until a task ends, its spec changes or a node
    fails, and those touch it as before. (Pacing needs no touch: held services are decided whenever
    a pass runs, and any progress runs one.)"""
    service = state.services.get(service_id)
    if service is None or not is_replicated(service) or _rebalances(service, settings):
        return True
    status = service.update_status
    return status is not None and status.state in update.IN_FLIGHT


def is_global(service: Service) -> bool:
    mode = service.spec.mode
    return mode is not None and mode.global_ is not None


def is_replicated(service: Service) -> bool:
    """A spec without a mode is replicated, as in Docker."""
    mode = service.spec.mode
    return mode is None or (mode.global_ is None and mode.replicated_job is None and mode.global_job is None)


def _rebalances(service: Service, settings: Settings) -> bool:
    return is_replicated(service) and rebalance.opted_in(service, settings.rebalance)


def _wants_share(state: ClusterState, node_id: str, settings: Settings) -> bool:
    """A node that joined or came back: ready, active, and running nothing that rebalances. (Nodes
    are touched by every task event on them too; once a node holds a task of a rebalanced service,
    that service's own task events drive the next moves, so the scan over all services is skipped.)"""
    node = state.nodes.get(node_id)
    if node is None or not takes_new_tasks(node):
        return False
    return not any(tasks.is_live(t) and (s := state.services.get(t.service_id)) is not None and _rebalances(s, settings)
                   for t in state.tasks_on_node(node_id))


def _is_global_job(service: Service) -> bool:
    mode = service.spec.mode
    return mode is not None and mode.global_job is not None


def _hit_by_nodes(state: ClusterState, nodes: set[str]) -> set[str]:
    """Services with live tasks on a node that can no longer run them (down, drained or deleted)."""
    hit: set[str] = set()
    for node_id in nodes:
        if is_invalid(state.nodes.get(node_id)):
            hit.update(t.service_id for t in state.tasks_on_node(node_id) if jobs.is_wanted(t))
    return hit


def _service(state: ClusterState, service_id: str, now_ns: int, limit: int, settings: Settings, pacing: Pacing,
             out: Decision) -> None:
    service = state.services.get(service_id)
    if service is None:
        out.intents.extend(tasks.retire_all(state.tasks_of_service(service_id), state))
    elif is_replicated(service):
        replicated.reconcile(state, service, now_ns, limit, pacing, out)
        if rebalance.opted_in(service, settings.rebalance):
            rebalance.reconcile(state, service, now_ns, out)
        else:
            rebalance.cancel(state, service, out)
    elif is_global(service):
        global_.reconcile(state, service, now_ns, limit, pacing, out)
    else:
        jobs.reconcile(state, service, now_ns, limit, pacing, out)
