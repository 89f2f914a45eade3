"""A small cluster built by folding events, with a clock the test controls, for the tests of the
orchestrator's and the scheduler's `decide`. Decisions are applied back through the fold after a
compare-and-set check, so a decision that writes one task twice fails the test that made it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import msgspec

from schemas.events import (
    AnyEvent,
    Envelope,
    NodeJoined,
    NodeStatusChanged,
    NodeUpdated,
    ServiceCreated,
    ServiceRemoved,
    ServiceUpdated,
    TaskAssigned,
    TaskCreated,
    TaskDesiredStateChanged,
    TaskPending,
    TaskRemoved,
    TaskStatusChanged,
    UpdateStatusChanged,
)
from schemas.node import EngineDescription, NodeDescription, NodeResources, NodeSpec
from schemas.service import (
    GlobalService,
    ReplicatedService,
    ServiceMode,
    ServiceSpec,
    TaskSpec,
)
from schemas.service import Platform as PlatformSpec
from schemas.task import Task, TaskState, TaskStatus
from services.kernel.fold import apply
from services.kernel.ids import format_ns
from services.kernel.placement import generic as generic_resources
from services.kernel.reconcile import Decide, Decision
from services.kernel.routing import subject_for
from services.kernel.state import ClusterState
from services.orchestrator.decide import Orchestrator, Settings

SECOND = 1_000_000_000
GIB = 1 << 30
T0 = 1_700_000_000 * SECOND

Summary = tuple[str, ...]


class World:
    def __init__(self) -> None:
        self.state = ClusterState()
        self.state.track_changes = True
        self.now = T0
        self._ids = itertools.count(1)

    # -- time and events -----------------------------------------------------------------------

    def tick(self, seconds: float) -> None:
        self.now += int(seconds * SECOND)

    def fold(self, *events: AnyEvent) -> None:
        """Each entry moves the clock by a nanosecond: entries still have an order in time, as they
        would on a real clock, and a decision never sees an entry from its future."""
        for ev in events:
            self.now += 1
            env = Envelope(id=f"e{next(self._ids)}", time=format_ns(self.now), actor="test", event=ev)
            apply(self.state, self.state.seq + 1, env, subject_for(ev, self.state))

    def timers_ms(self, decision: Decision) -> list[int]:
        """When the decision wants to be woken, in whole milliseconds from now."""
        return [round((t.at_ns - self.now) / 1e6) for t in decision.timers]

    # -- nodes ---------------------------------------------------------------------------------

    def node(self, node_id: str, *, cpus: float = 4, memory: int = 8 * GIB, labels: dict[str, str] | None = None,
             engine_labels: dict[str, str] | None = None, role: str = "worker", availability: str = "active",
             os: str = "linux", arch: str = "x86_64", addr: str = "10.0.0.1", generic: Iterable[str] = ()) -> str:
        """`generic`: advertised generic resources as the agent's flag spells them (`gpu=2`, `gpu=GPU-0`)."""
        description = NodeDescription(
            hostname=f"host-{node_id}",
            platform=PlatformSpec(os=os, architecture=arch),
            resources=NodeResources(nano_cpus=int(cpus * SECOND), memory_bytes=memory,
                                    generic_resources=generic_resources.parse(generic) or None),
            engine=EngineDescription(labels=engine_labels),
        )
        spec = NodeSpec(labels=labels, role=role, availability=availability)
        self.fold(NodeJoined(node_id=node_id, spec=spec, description=description, addr=addr))
        return node_id

    def node_spec(self, node_id: str, **changes: object) -> None:
        self.fold(NodeUpdated(node_id=node_id, spec=msgspec.structs.replace(self.state.nodes[node_id].spec, **changes)))

    def node_status(self, node_id: str, state: str) -> None:
        self.fold(NodeStatusChanged(node_id=node_id, state=state))

    # -- services ------------------------------------------------------------------------------

    def service(self, name: str, *, replicas: int | None = 1, global_: bool = False,
                template: TaskSpec | None = None, **spec: object) -> str:
        mode = ServiceMode(global_=GlobalService()) if global_ else ServiceMode(
            replicated=ReplicatedService(replicas=replicas))
        self.fold(ServiceCreated(service_id=name, spec=ServiceSpec(
            name=name, mode=mode, task_template=template or TaskSpec(), **spec)))  # type: ignore[arg-type]
        return name

    def update(self, service_id: str, **changes: object) -> None:
        spec = msgspec.structs.replace(self.state.services[service_id].spec, **changes)
        self.fold(ServiceUpdated(service_id=service_id, spec=spec))

    def scale(self, service_id: str, replicas: int) -> None:
        self.update(service_id, mode=ServiceMode(replicated=ReplicatedService(replicas=replicas)))

    def remove_service(self, service_id: str) -> None:
        self.fold(ServiceRemoved(service_id=service_id))

    # -- tasks ---------------------------------------------------------------------------------

    def tasks(self, service_id: str | None = None) -> list[Task]:
        found = self.state.tasks.values() if service_id is None else self.state.tasks_of_service(service_id)
        return sorted(found, key=lambda t: (t.slot, t.node_id, t.created_at, t.id))

    def live(self, service_id: str | None = None) -> list[Task]:
        return [t for t in self.tasks(service_id) if t.desired_state in (TaskState.READY, TaskState.RUNNING)]

    def task(self, task_id: str) -> Task:
        return self.state.tasks[task_id]

    def assign(self, task_id: str, node_id: str) -> None:
        self.fold(TaskAssigned(task=self.state.tasks[task_id], node_id=node_id))

    def report(self, task_id: str, state: TaskState, err: str | None = None) -> None:
        self.fold(TaskStatusChanged(task_id=task_id, status=TaskStatus(state=state, err=err)))

    def run(self, task_id: str, node_id: str) -> None:
        """What the scheduler and an agent would do: assign, then report running."""
        if not self.state.tasks[task_id].node_id:
            self.assign(task_id, node_id)
        self.report(task_id, TaskState.RUNNING)

    def run_all(self, service_id: str, nodes: Iterable[str]) -> None:
        """Start every live, unstarted task of a service, round-robin over `nodes`."""
        cycle = itertools.cycle(list(nodes))
        for t in self.live(service_id):
            if t.desired_state == TaskState.RUNNING and t.status.state in (TaskState.NEW, TaskState.PENDING):
                self.run(t.id, t.node_id or next(cycle))

    # -- deciding ------------------------------------------------------------------------------

    def decide(self, decide: Decide, services: Iterable[str] | None = None,
               nodes: Iterable[str] | None = None) -> Decision:
        """A pass over the given services and nodes; a full pass when neither is given, which (as
        in the real loop) also forgets what was touched before it."""
        if services is None and nodes is None:
            self.state.take_touched()
            services = set(self.state.services) | set(self.state.tasks_by_service)
            nodes = set(self.state.nodes) | set(self.state.tasks_by_node)
        return decide(self.state, set(services or ()), set(nodes or ()), self.now)

    def orchestrate(self, services: Iterable[str] | None = None, nodes: Iterable[str] | None = None,
                    settings: Settings | None = None) -> Decision:
        return self.decide(Orchestrator(settings or Settings()), services, nodes)

    def apply(self, decision: Decision) -> None:
        for intent in decision.intents:
            assert intent.expect_seq == self._last_seq(intent.event), f"compare-and-set would fail: {intent}"
            self.fold(intent.event)

    def apply_checked(self, first: Decision, context: object = None) -> None:
        """Apply a pass's decision and check it was complete: the next pass may only prune history the
        first made prunable (a task stopped in a pass cannot also be deleted in it); the one after
        proposes nothing."""
        self.apply(first)
        again = self.orchestrate()
        late = summary(again, self.state)
        assert all(s[0] == "removed" for s in late), (context, summary(first, self.state), late)
        self.apply(again)
        assert self.orchestrate().intents == []

    def settle(self, decide: Decide | None = None, rounds: int = 10) -> list[Summary]:
        """Decide and apply until a pass proposes nothing; everything that was proposed."""
        decide = decide or Orchestrator(Settings())
        done: list[Summary] = []
        for _ in range(rounds):
            decision = self.decide(decide)
            if not decision.intents:
                return done
            done += summary(decision, self.state)
            self.apply(decision)
        raise AssertionError(f"no fixpoint after {rounds} passes: {done}")

    def _last_seq(self, ev: AnyEvent) -> int:
        if isinstance(ev, TaskCreated):
            return 0
        if isinstance(ev, NodeStatusChanged):
            return self.state.nodes[ev.node_id].version.index
        if isinstance(ev, (UpdateStatusChanged, ServiceUpdated)):
            return self.state.services[ev.service_id].version.index
        task_id = ev.task.id if isinstance(ev, TaskAssigned) else getattr(ev, "task_id", "")
        task = self.state.tasks.get(task_id)
        return task.version.index if task is not None else -1


def summary(decision: Decision, state: ClusterState) -> list[Summary]:
    """Decisions as short tuples a table can spell: ("created", slot, node, desired), ("desired",
    task, state), ("removed", task), ("status", task, state), ("assigned", task, node),
    ("pending", task, err), ("node", node, state), ("update", state), ("service", "rollback")."""
    return [_summarise(intent.event, state) for intent in decision.intents]


def _summarise(ev: AnyEvent, state: ClusterState) -> Summary:
    match ev:
        case TaskCreated(task=t):
            return ("created", str(t.slot), t.node_id, t.desired_state.value)
        case TaskDesiredStateChanged(task_id=tid, desired_state=desired):
            return ("desired", tid, desired.value)
        case TaskRemoved(task_id=tid):
            return ("removed", tid)
        case TaskStatusChanged(task_id=tid, status=status):
            return ("status", tid, status.state.value)
        case TaskAssigned(task=t, node_id=node):
            return ("assigned", t.id, node)
        case TaskPending(task_id=tid, err=err):
            return ("pending", tid, err)
        case NodeStatusChanged(node_id=node, state=s):
            return ("node", node, s)
        case UpdateStatusChanged(update_status=status):
            return ("update", status.state if status else "")
        case ServiceUpdated(rollback=rollback):
            return ("service", "rollback" if rollback else "update")
    raise AssertionError(f"unexpected event {ev}")
