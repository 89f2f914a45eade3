"""The event catalogue: facts in the past tense, one tagged union, wrapped in an envelope.

Decisions (`decide`) return bare event payloads; the shell that appends them wraps each in an
`Envelope` with its id, time and actor. That keeps the deciding code free of clocks and identities.
Adding an event type is backwards compatible: older readers count it as unknown and skip it.
"""

from __future__ import annotations

import msgspec

from schemas.base import Fact
from schemas.cluster import SwarmSpec
from schemas.node import NodeDescription, NodeSpec
from schemas.service import PortConfig, ServiceSpec, UpdateStatus
from schemas.task import Task, TaskState, TaskStatus

SCHEMA_VERSION = 1


class Event(Fact, frozen=True, tag_field="Type", tag=True):
    """Base of every event payload; the tag is the class name."""


class ClusterCreated(Event, frozen=True):
    cluster_id: str = msgspec.field(name="ClusterID")
    worker_token: str = ""
    manager_token: str = ""


class JoinTokenRotated(Event, frozen=True):
    role: str
    token: str


class ClusterSpecUpdated(Event, frozen=True):
    """The whole new spec (`docker swarm update`, or the orchestrator recording what it obeys)."""

    spec: SwarmSpec


class NodeJoined(Event, frozen=True):
    node_id: str = msgspec.field(name="NodeID")
    spec: NodeSpec
    description: NodeDescription
    addr: str = ""


class NodeRejoined(Event, frozen=True):
    """An agent with a known node id started again; its description may have changed."""

    node_id: str = msgspec.field(name="NodeID")
    description: NodeDescription
    addr: str = ""


class NodeUpdated(Event, frozen=True):
    node_id: str = msgspec.field(name="NodeID")
    spec: NodeSpec


class NodeStatusChanged(Event, frozen=True):
    node_id: str = msgspec.field(name="NodeID")
    state: str
    message: str = ""


class NodeRemoved(Event, frozen=True):
    node_id: str = msgspec.field(name="NodeID")


class ServiceCreated(Event, frozen=True):
    """`Ports` are the endpoint's ports with every PublishedPort assigned (the spec may leave it 0)."""

    service_id: str = msgspec.field(name="ServiceID")
    spec: ServiceSpec
    ports: list[PortConfig] | None = None


class ServiceUpdated(Event, frozen=True):
    """A new spec. `Rollback` marks a return to the previous spec: asked for (`rollback=previous`),
    or automatic, when `FailedTask` names the task whose failure made a rolling update roll back."""

    service_id: str = msgspec.field(name="ServiceID")
    spec: ServiceSpec
    rollback: bool = False
    failed_task: str = ""
    ports: list[PortConfig] | None = None


class ServiceRemoved(Event, frozen=True):
    service_id: str = msgspec.field(name="ServiceID")


class UpdateStatusChanged(Event, frozen=True):
    service_id: str = msgspec.field(name="ServiceID")
    update_status: UpdateStatus | None


class TaskCreated(Event, frozen=True):
    task: Task


class TaskAssigned(Event, frozen=True):
    """The scheduler bound a task to a node.

    It carries the whole task so the agent, which follows only its node's subjects and never saw
    the `TaskCreated` written while the task waited, has everything it needs to run it.
    """

    task: Task
    node_id: str = msgspec.field(name="NodeID")


class TaskPending(Event, frozen=True):
    task_id: str = msgspec.field(name="TaskID")
    err: str


class TaskDesiredStateChanged(Event, frozen=True):
    task_id: str = msgspec.field(name="TaskID")
    desired_state: TaskState


class TaskStatusChanged(Event, frozen=True):
    task_id: str = msgspec.field(name="TaskID")
    status: TaskStatus


class TaskRemoved(Event, frozen=True):
    task_id: str = msgspec.field(name="TaskID")


class LeaderElected(Event, frozen=True):
    """A process won the lease of a deciding loop. `Term` is the lease revision it won: terms only
    grow in the log, and every later batch of that leader is fenced on this entry."""

    loop: str
    term: int
    holder: str
    addr: str = ""


class LeaderWrote(Event, frozen=True):
    """First entry of every atomic batch a leader appends: it compare-and-sets on the loop's
    `LeaderElected` entry, so the batch is refused as a whole once a newer term is in the log."""

    loop: str
    term: int


AnyEvent = (
    ClusterCreated
    | JoinTokenRotated
    | ClusterSpecUpdated
    | NodeJoined
    | NodeRejoined
    | NodeUpdated
    | NodeStatusChanged
    | NodeRemoved
    | ServiceCreated
    | ServiceUpdated
    | ServiceRemoved
    | UpdateStatusChanged
    | TaskCreated
    | TaskAssigned
    | TaskPending
    | TaskDesiredStateChanged
    | TaskStatusChanged
    | TaskRemoved
    | LeaderElected
    | LeaderWrote
)


class Envelope(Fact, frozen=True):
    """One entry of the log: who did what, when. `Id` is also the `Nats-Msg-Id` (de-duplication)."""

    id: str = msgspec.field(name="ID")
    time: str
    actor: str
    event: AnyEvent
    schema: int = SCHEMA_VERSION
