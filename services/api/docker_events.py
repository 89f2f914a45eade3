"""The log as Docker events: what `docker events` shows, computed from the entries themselves.

dockerd's swarm events say what changed (`replicas.old`/`replicas.new`, `availability.old`/...),
so the translator remembers the last value it saw of each service and node. A live stream starts
from the current projection; a stream from the past starts blank (a value the stream has not
shown yet has no known "old"), and only names fall back to the projection. Tasks appear as
container events, as they do on the node that runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.events import (
    Envelope,
    NodeJoined,
    NodeRejoined,
    NodeRemoved,
    NodeStatusChanged,
    NodeUpdated,
    ServiceCreated,
    ServiceRemoved,
    ServiceUpdated,
    TaskCreated,
    TaskRemoved,
    TaskStatusChanged,
    UpdateStatusChanged,
)
from schemas.service import ContainerSpec, ServiceSpec
from schemas.task import TaskState, is_terminal
from services.api import filters
from services.kernel.ids import parse_ns
from services.kernel.state import ClusterState

DockerEvent = dict[str, Any]
Attributes = dict[str, str]
KEYS = frozenset({"type", "event", "scope", "service", "node"})
SCOPE = "swarm"


@dataclass
class _NodeSeen:
    name: str
    availability: str
    role: str
    state: str


@dataclass
class _TaskSeen:
    name: str
    service_id: str
    node_id: str
    image: str


class Translator:
    def __init__(self, state: ClusterState, *, live: bool) -> None:
        self.state = state
        self.services: dict[str, ServiceSpec] = {}
        self.update_states: dict[str, str] = {}
        self.nodes: dict[str, _NodeSeen] = {}
        self.tasks: dict[str, _TaskSeen] = {}
        if live:
            self._remember_current()
        self._handlers: dict[type, Callable[[Any], tuple[str, str, str, Attributes] | None]] = {
            ServiceCreated: self._service_created, ServiceUpdated: self._service_updated,
            UpdateStatusChanged: self._update_status, ServiceRemoved: self._service_removed,
            NodeJoined: self._node_joined, NodeRejoined: self._node_rejoined, NodeUpdated: self._node_updated,
            NodeStatusChanged: self._node_status, NodeRemoved: self._node_removed,
            TaskCreated: self._task_created, TaskStatusChanged: self._task_status, TaskRemoved: self._task_removed,
        }

    def _remember_current(self) -> None:
        for svc in self.state.services.values():
            self.services[svc.id] = svc.spec
            self.update_states[svc.id] = svc.update_status.state if svc.update_status else ""
        for node in self.state.nodes.values():
            self.nodes[node.id] = _NodeSeen(node.description.hostname, node.spec.availability, node.spec.role,
                                            node.status.state)

    def translate(self, env: Envelope) -> DockerEvent | None:
        handler = self._handlers.get(type(env.event))
        found = handler(env.event) if handler is not None else None
        if found is None:
            return None
        kind, action, actor, attributes = found
        ns = parse_ns(env.time)
        return {"Type": kind, "Action": action, "Actor": {"ID": actor, "Attributes": attributes}, "scope": SCOPE,
                "time": ns // 1_000_000_000, "timeNano": ns}

    # -- services --------------------------------------------------------------------------------

    def _service_name(self, service_id: str) -> str:
        spec = self.services.get(service_id)
        svc = self.state.services.get(service_id)
        return spec.name if spec is not None else svc.spec.name if svc is not None else ""

    def _service_created(self, ev: ServiceCreated) -> tuple[str, str, str, Attributes]:
        self.services[ev.service_id] = ev.spec
        return "service", "create", ev.service_id, {"name": ev.spec.name}

    def _service_updated(self, ev: ServiceUpdated) -> tuple[str, str, str, Attributes]:
        old = self.services.get(ev.service_id)
        self.services[ev.service_id] = ev.spec
        attributes = {"name": ev.spec.name}
        if old is not None:
            _changed(attributes, "image", _image(old), _image(ev.spec))
            _changed(attributes, "replicas", _replicas(old), _replicas(ev.spec))
            _changed(attributes, "name", old.name, ev.spec.name)
        return "service", "update", ev.service_id, attributes

    def _update_status(self, ev: UpdateStatusChanged) -> tuple[str, str, str, Attributes]:
        new = ev.update_status.state if ev.update_status is not None else ""
        old = self.update_states.get(ev.service_id)
        self.update_states[ev.service_id] = new
        attributes = {"name": self._service_name(ev.service_id)}
        _changed(attributes, "updatestate", old, new)
        return "service", "update", ev.service_id, attributes

    def _service_removed(self, ev: ServiceRemoved) -> tuple[str, str, str, Attributes]:
        name = self._service_name(ev.service_id)
        self.services.pop(ev.service_id, None)
        return "service", "remove", ev.service_id, {"name": name}

    # -- nodes -----------------------------------------------------------------------------------

    def _node(self, node_id: str) -> _NodeSeen:
        seen = self.nodes.get(node_id)
        if seen is None:
            node = self.state.nodes.get(node_id)
            seen = _NodeSeen(node.description.hostname if node is not None else "", "", "", "")
            self.nodes[node_id] = seen
        return seen

    def _node_joined(self, ev: NodeJoined) -> tuple[str, str, str, Attributes]:
        self.nodes[ev.node_id] = _NodeSeen(ev.description.hostname, ev.spec.availability, ev.spec.role, "ready")
        return "node", "create", ev.node_id, {"name": ev.description.hostname}

    def _node_rejoined(self, ev: NodeRejoined) -> tuple[str, str, str, Attributes]:
        return self._node_state(ev.node_id, "ready")

    def _node_status(self, ev: NodeStatusChanged) -> tuple[str, str, str, Attributes]:
        return self._node_state(ev.node_id, ev.state)

    def _node_state(self, node_id: str, state: str) -> tuple[str, str, str, Attributes]:
        seen = self._node(node_id)
        attributes = {"name": seen.name}
        _changed(attributes, "state", seen.state or None, state)
        seen.state = state
        return "node", "update", node_id, attributes

    def _node_updated(self, ev: NodeUpdated) -> tuple[str, str, str, Attributes]:
        seen = self._node(ev.node_id)
        attributes = {"name": seen.name}
        _changed(attributes, "availability", seen.availability or None, ev.spec.availability)
        _changed(attributes, "role", seen.role or None, ev.spec.role)
        seen.availability, seen.role = ev.spec.availability, ev.spec.role
        return "node", "update", ev.node_id, attributes

    def _node_removed(self, ev: NodeRemoved) -> tuple[str, str, str, Attributes]:
        name = self._node(ev.node_id).name
        self.nodes.pop(ev.node_id, None)
        return "node", "remove", ev.node_id, {"name": name}

    # -- tasks, as containers --------------------------------------------------------------------

    def _task(self, task_id: str) -> _TaskSeen | None:
        seen = self.tasks.get(task_id)
        task = self.state.tasks.get(task_id)
        if seen is None and task is not None:
            seen = _TaskSeen(filters.task_name(task, self._service_name(task.service_id)), task.service_id,
                             task.node_id, _image_of_task(task.spec.container_spec))
        return seen

    def _task_created(self, ev: TaskCreated) -> tuple[str, str, str, Attributes]:
        task = ev.task
        name = self._service_name(task.service_id) or task.service_name
        seen = _TaskSeen(filters.task_name(task, name), task.service_id, task.node_id,
                         _image_of_task(task.spec.container_spec))
        self.tasks[task.id] = seen
        return "container", "create", task.id, self._task_attributes(task.id, seen)

    def _task_status(self, ev: TaskStatusChanged) -> tuple[str, str, str, Attributes] | None:
        seen = self._task(ev.task_id)
        state = ev.status.state
        if seen is None or not (state is TaskState.RUNNING or is_terminal(state)):
            return None
        attributes = self._task_attributes(ev.task_id, seen)
        if ev.status.container_status is not None and is_terminal(state):
            attributes["exitCode"] = str(ev.status.container_status.exit_code)
        return "container", "start" if state is TaskState.RUNNING else "die", ev.task_id, attributes

    def _task_removed(self, ev: TaskRemoved) -> tuple[str, str, str, Attributes] | None:
        seen = self._task(ev.task_id)
        self.tasks.pop(ev.task_id, None)
        return ("container", "destroy", ev.task_id, self._task_attributes(ev.task_id, seen)) if seen else None

    def _task_attributes(self, task_id: str, seen: _TaskSeen) -> Attributes:
        task = self.state.tasks.get(task_id)
        node_id = seen.node_id or (task.node_id if task is not None else "")
        return {"name": seen.name, "image": seen.image, "com.docker.swarm.task.id": task_id,
                "com.docker.swarm.service.id": seen.service_id,
                "com.docker.swarm.service.name": self._service_name(seen.service_id),
                "com.docker.swarm.node.id": node_id}


def matches(event: DockerEvent, wanted: filters.Filters) -> bool:
    """`service` and `node` match an event's own object or, for container events, the one it belongs to."""
    actor, attributes = event["Actor"]["ID"], event["Actor"]["Attributes"]
    services = {attributes.get("com.docker.swarm.service.id"), attributes.get("com.docker.swarm.service.name")}
    nodes = {attributes.get("com.docker.swarm.node.id")}
    own = {actor, attributes.get("name")}
    return (
        filters.one_of(event["Type"], wanted.get("type"))
        and filters.one_of(event["Action"], wanted.get("event"))
        and filters.one_of(event["scope"], wanted.get("scope"))
        and _related(wanted.get("service"), own if event["Type"] == "service" else services)
        and _related(wanted.get("node"), own if event["Type"] == "node" else nodes)
    )


def _related(wanted: set[str] | None, ids: set[str | None]) -> bool:
    return wanted is None or bool(wanted & {i for i in ids if i})


def _changed(attributes: Attributes, key: str, old: object, new: object) -> None:
    if old is not None and old != new:
        attributes[f"{key}.old"], attributes[f"{key}.new"] = str(old), str(new)
    elif old is None and new:
        attributes[f"{key}.new"] = str(new)


def _image(spec: ServiceSpec) -> str:
    template = spec.task_template
    return _image_of_task(template.container_spec if template is not None else None)


def _image_of_task(container: ContainerSpec | None) -> str:
    return container.image if container is not None else ""


def _replicas(spec: ServiceSpec) -> int | None:
    replicated = spec.mode.replicated if spec.mode is not None else None
    return replicated.replicas if replicated is not None else None

