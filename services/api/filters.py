"""List filters: the `filters` query parameter, parsed and matched as dockerd does.

Clients send `{"key":{"value":true}}` (current) or `{"key":["value"]}` (legacy); both parse to
key -> set of values. Values of one key are OR-ed, keys are AND-ed; `label` filters are AND-ed
like Docker's `MatchKVList`. `id` and `name` match by prefix (the CLI narrows results itself).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec
from msgspec.structs import replace

from schemas.node import Node
from schemas.service import Placement, Service, TaskSpec
from schemas.task import Task, TaskState
from services.api.errors import InvalidParameter
from services.api.modes import mode_name
from services.kernel import constraints

Filters = dict[str, set[str]]

SERVICE_KEYS = frozenset({"id", "name", "label", "mode", "runtime"})
TASK_KEYS = frozenset({"id", "name", "label", "service", "node", "desired-state", "runtime", "_up-to-date"})
NODE_KEYS = frozenset({"id", "name", "label", "node.label", "role", "membership"})

_TASK_STATES = frozenset(s.value for s in TaskState)
_ROLES = frozenset({"manager", "worker"})
_MEMBERSHIPS = frozenset({"accepted", "pending"})
_RUNTIME = "container"


def parse(raw: str | None, allowed: frozenset[str]) -> Filters:
    """Parse the query value; an unknown key is refused with dockerd's message."""
    if not raw:
        return {}
    try:
        decoded = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError) as e:
        raise InvalidParameter(f"invalid filters: {e}") from e
    if not isinstance(decoded, dict):
        raise InvalidParameter("invalid filters: expected a JSON object")
    parsed = {key: _values(key, values) for key, values in decoded.items()}
    for key in parsed:
        if key not in allowed:
            raise InvalidParameter(f"Invalid filter '{key}'")
    return parsed


def _values(key: str, values: object) -> set[str]:
    if isinstance(values, (dict, list)) and all(isinstance(v, str) for v in values):
        return set(values)
    raise InvalidParameter(f"invalid filters: the values of '{key}' must be a list or a map of strings")


def _check_choices(f: Filters, key: str, allowed: frozenset[str], label: str) -> None:
    for value in f.get(key, ()):
        if value not in allowed:
            raise InvalidParameter(f"Invalid {label} filter: '{value}'")


def check_task_filters(f: Filters) -> None:
    _check_choices(f, "desired-state", _TASK_STATES, "desired-state")


def check_node_filters(f: Filters) -> None:
    _check_choices(f, "role", _ROLES, "role")
    _check_choices(f, "membership", _MEMBERSHIPS, "membership")


def by_prefix(value: str, wanted: set[str] | None) -> bool:
    return wanted is None or any(value.startswith(w) for w in wanted)


def by_prefixes(values: Iterable[str], wanted: set[str] | None) -> bool:
    return wanted is None or any(by_prefix(v, wanted) for v in values if v)


def one_of(value: str, wanted: set[str] | None) -> bool:
    return wanted is None or value in wanted


def by_labels(labels: Mapping[str, str] | None, wanted: set[str] | None) -> bool:
    """Every wanted `key` or `key=value` must be among the labels."""
    if wanted is None:
        return True
    have = labels or {}
    for item in wanted:
        key, eq, value = item.partition("=")
        if key not in have or (eq and have[key] != value):
            return False
    return True


def service_matches(svc: Service, f: Filters) -> bool:
    return (
        by_prefix(svc.id, f.get("id"))
        and by_prefix(svc.spec.name, f.get("name"))
        and by_labels(svc.spec.labels, f.get("label"))
        and one_of(mode_name(svc.spec), f.get("mode"))
        and one_of(_RUNTIME, f.get("runtime"))
    )


def task_name(task: Task, service_name: str) -> str:
    """swarmkit's task name, `<service>.<slot or node>.<task id>`, which the `name` filter matches."""
    return f"{service_name}.{task.slot or task.node_id}.{task.id}"


def task_matches(task: Task, f: Filters, service: Service | None, node: Node | None) -> bool:
    """`service` and `node` are the task's (None once removed); `service`/`node` keys hold resolved ids."""
    service_name = service.spec.name if service is not None else task.service_name
    return (
        by_prefix(task.id, f.get("id"))
        and by_prefix(task_name(task, service_name), f.get("name"))
        and by_labels(task.labels, f.get("label"))
        and one_of(task.service_id, f.get("service"))
        and one_of(task.node_id, f.get("node"))
        and one_of(task.desired_state.value, f.get("desired-state"))
        and one_of(_RUNTIME, f.get("runtime"))
        and ("_up-to-date" not in f or up_to_date(task, service, node))
    )


def up_to_date(task: Task, service: Service | None, node: Node | None) -> bool:
    """swarmkit's "not dirty", which the CLI's progress display polls for: the task runs the service's
    current task spec. Scaling changes the spec but not the task spec, so it leaves tasks up to date;
    so does a change of constraints alone that the task's node still satisfies."""
    if service is None:
        return False
    if task.spec_version.index == service.spec_version.index:
        return True
    template = service.spec.task_template or TaskSpec()
    if task.spec == template:
        return True
    return _constraints_only_changed(task.spec, template) and node is not None and _satisfies(node, template)


def _constraints_only_changed(current: TaskSpec, wanted: TaskSpec) -> bool:
    ours, theirs = current.placement or Placement(), wanted.placement or Placement()
    return replace(wanted, placement=replace(theirs, constraints=ours.constraints)) == replace(current, placement=ours)


def _satisfies(node: Node, template: TaskSpec) -> bool:
    try:
        wanted = constraints.parse_all(template.placement.constraints if template.placement else None)
    except constraints.ConstraintError:
        return False
    return constraints.match_all(wanted, node)


def node_matches(node: Node, f: Filters) -> bool:
    return (
        by_prefix(node.id, f.get("id"))
        and by_prefixes((node.spec.name or "", node.description.hostname), f.get("name"))
        and by_labels(node.description.engine.labels, f.get("label"))
        and by_labels(node.spec.labels, f.get("node.label"))
        and one_of(node.spec.role, f.get("role"))
        and one_of("accepted", f.get("membership"))
    )
