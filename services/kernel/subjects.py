"""Subject naming for the event log.

Subjects carry the entity so consumers filter cheaply and compare-and-set works per entity. Each
writer has its own leaf under an entity, so a compare-and-set conflict means a real race:

    shoal.evt.cluster
    shoal.evt.node.<node>.{agent,spec,status}
    shoal.evt.service.<service>.{spec,update}
    shoal.evt.task.<task>.{desired,placement}              until the task is assigned
    shoal.evt.assigned.<node>.<task>.{desired,placement,status}   from its assignment on
    shoal.evt.leader.<loop>.{term,fence}
"""

from __future__ import annotations

PREFIX = "shoal.evt"
ALL = f"{PREFIX}.>"
CLUSTER = f"{PREFIX}.cluster"
LAYOUT = "assigned-by-node"
"""The task layout above, recorded in the stream's metadata: a log in an earlier layout
(`task.<node>.<task>`, then `task.<task>.<node>`) cannot be written by this Shoal
(`jetstream.ensure_stream` refuses it)."""
TASKS = f"{PREFIX}.task.>"
"""Unassigned tasks here; every earlier layout wrote all its tasks here."""
_UNASSIGNED = f"{PREFIX}.task."
_ASSIGNED = "assigned"


def node(node_id: str, leaf: str) -> str:
    return f"{PREFIX}.node.{node_id}.{leaf}"


def node_all(node_id: str) -> str:
    return f"{PREFIX}.node.{node_id}.>"


def service(service_id: str, leaf: str) -> str:
    return f"{PREFIX}.service.{service_id}.{leaf}"


def service_all(service_id: str) -> str:
    return f"{PREFIX}.service.{service_id}.>"


SERVICE_SPECS = f"{PREFIX}.service.*.spec"
"""Every service's spec leaf: creates and renames compare-and-set against all of them (unique names)."""


def task(node_id: str, task_id: str, leaf: str) -> str:
    """Under the task while it waits for a node, under its node once assigned, so that an agent
    follows one literal prefix. With a wildcard before the node (`task.*.<node>.>`, the layout
    before), the whole stream stalled after each new message block (docs/architecture.md,
    "Subjects")."""
    if node_id:
        return f"{PREFIX}.{_ASSIGNED}.{node_id}.{task_id}.{leaf}"
    return f"{PREFIX}.task.{task_id}.{leaf}"


def task_all(node_id: str, task_id: str) -> str:
    """A task's subjects at its present place: the compare-and-set scope of a writer whose view has
    the task on `node_id` ("" unassigned). It is a literal prefix: a wildcard before the task has
    the server match every task's subjects on each write. The scope of an unassigned task does not
    hold its assignment, so a write made on a view from before the assignment passes the server's
    check; the fold ignores it (`fold.apply`)."""
    return task(node_id, task_id, ">")


def node_tasks(node_id: str) -> str:
    """What an agent follows: only its own node's tasks."""
    return f"{PREFIX}.{_ASSIGNED}.{node_id}.>"


def is_unassigned_task(subject: str) -> bool:
    return subject.startswith(_UNASSIGNED)


def task_node(subject: str) -> str:
    """The node in a task subject, once the task is assigned; "" for any other subject."""
    parts = subject.split(".")
    return parts[3] if len(parts) == 6 and parts[2] == _ASSIGNED else ""


def leader_term(loop: str) -> str:
    """`LeaderElected` entries of one deciding loop: the subject every leader batch is fenced on."""
    return f"{PREFIX}.leader.{loop}.term"


def leader_fence(loop: str) -> str:
    """`LeaderWrote` entries: on their own subject, so fencing never moves the term subject."""
    return f"{PREFIX}.leader.{loop}.fence"


def heartbeat(node_id: str) -> str:
    """Heartbeats travel on core NATS, never in the log."""
    return f"shoal.hb.{node_id}"


Filter = str | tuple[str, ...]
"""What a follower reads: one subject (wildcards allowed) or several (a sim agent's nodes)."""


def matches_filter(filter_subjects: Filter, subject: str) -> bool:
    if isinstance(filter_subjects, str):
        return matches(filter_subjects, subject)
    return any(matches(f, subject) for f in filter_subjects)


def matches(filter_subject: str, subject: str) -> bool:
    """NATS wildcard matching: `*` is one token, a final `>` is one or more."""
    f = filter_subject.split(".")
    s = subject.split(".")
    for i, tok in enumerate(f):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(f) == len(s)


def logs(node_id: str) -> str:
    """Log requests for one node's agent (core NATS, request/reply; `schemas/logs.py`)."""
    return f"shoal.logs.{node_id}"
