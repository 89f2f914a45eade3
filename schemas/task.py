"""Tasks and their state machine.

Observed state only moves forward: the numeric ranks are Swarm's, spaced by 64, and the larger of
two observations wins (a Lamport clock over a task's life). Desired state follows the same order.
"""

from __future__ import annotations

import enum

import msgspec

from schemas.base import Labels, Record, Version, Wire
from schemas.service import Endpoint, PortConfig, TaskSpec


class TaskState(enum.StrEnum):
    NEW = "new"
    PENDING = "pending"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    PREPARING = "preparing"
    READY = "ready"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETE = "complete"
    SHUTDOWN = "shutdown"
    FAILED = "failed"
    REJECTED = "rejected"
    REMOVE = "remove"
    ORPHANED = "orphaned"


RANK: dict[TaskState, int] = {
    TaskState.NEW: 0,
    TaskState.PENDING: 64,
    TaskState.ASSIGNED: 192,
    TaskState.ACCEPTED: 256,
    TaskState.PREPARING: 320,
    TaskState.READY: 384,
    TaskState.STARTING: 448,
    TaskState.RUNNING: 512,
    TaskState.COMPLETE: 576,
    TaskState.SHUTDOWN: 640,
    TaskState.FAILED: 704,
    TaskState.REJECTED: 768,
    TaskState.REMOVE: 800,
    TaskState.ORPHANED: 832,
}

TERMINAL = frozenset(s for s, r in RANK.items() if r > RANK[TaskState.RUNNING])


def can_move(current: TaskState, proposed: TaskState) -> bool:
    """True when `proposed` does not move a task backwards (equal is allowed: a refreshed reason)."""
    return RANK[proposed] >= RANK[current]


def is_terminal(state: TaskState) -> bool:
    return RANK[state] > RANK[TaskState.RUNNING]


class ContainerStatus(Record):
    container_id: str = msgspec.field(default="", name="ContainerID")
    pid: int = msgspec.field(default=0, name="PID")
    exit_code: int = 0


class PortStatus(Wire):
    ports: list[PortConfig] | None = None


class TaskStatus(Record):
    timestamp: str = ""
    state: TaskState = TaskState.NEW
    message: str = ""
    err: str | None = None
    container_status: ContainerStatus | None = None
    port_status: PortStatus = msgspec.field(default_factory=PortStatus)


class Task(Record):
    """A task as the projection holds it and the Engine API returns it.

    `ServiceName` is carried so an agent, which sees only its own node's subjects, can name and label
    the container without reading the service; Docker clients ignore it.
    """

    id: str = msgspec.field(default="", name="ID")
    version: Version = Version()
    created_at: str = ""
    updated_at: str = ""
    labels: Labels = {}
    spec: TaskSpec = msgspec.field(default_factory=TaskSpec)
    spec_version: Version = Version()
    service_id: str = msgspec.field(default="", name="ServiceID")
    service_name: str = ""
    slot: int = 0
    node_id: str = msgspec.field(default="", name="NodeID")
    status: TaskStatus = msgspec.field(default_factory=TaskStatus)
    desired_state: TaskState = TaskState.RUNNING
    job_iteration: Version | None = None
    endpoint: Endpoint | None = None
    """The service's endpoint when the task was created (swarmkit's Task.Endpoint): the agent, which
    never reads services, learns from it which ports to give the task."""
