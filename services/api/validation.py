"""Service and node specs: what is refused (400, naming the field) and what is stored.

Checks are small functions in one list, each responsible for one part of the spec, so a new rule
is one more function. Messages dockerd users already know are kept verbatim; the others name the
JSON path of the offending field. `normalize_service_spec` then stores what dockerd stores:
`Replicas: 1` for `Replicated: {}` (the CLI's scale and progress display need the number),
`Runtime: container` and `Isolation: default`, so a spec read back and sent again is unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from typing import Any

from msgspec.structs import replace

from schemas.node import NodeSpec
from schemas.service import (
    ContainerSpec,
    EndpointSpec,
    HealthConfig,
    Placement,
    PortConfig,
    ReplicatedJob,
    ReplicatedService,
    ResourceLimits,
    ResourceReservations,
    RestartPolicy,
    ServiceMode,
    ServiceSpec,
    TaskSpec,
    UpdateConfig,
)
from services.api.errors import InvalidParameter, invalid_argument
from services.api.images import valid_reference
from services.api.modes import set_modes
from services.kernel import constraints

MAX_NAME = 63
MIN_NANO_CPUS = 1_000_000
MIN_MEMORY = 4 * 1024 * 1024
MIN_HEALTH_INTERVAL = 1_000_000
MAX_PORT = 65535

_NAME = re.compile(r"[a-zA-Z0-9](?:[-_a-zA-Z0-9]*[a-zA-Z0-9])?")
_RUNTIMES = ("", "container")
_CONDITIONS = ("", "none", "on-failure", "any")
_ORDERS = ("", "stop-first", "start-first")
_UPDATE_ACTIONS = ("", "pause", "continue", "rollback")
_ROLLBACK_ACTIONS = ("", "pause", "continue")
_ENDPOINT_MODES = ("", "vip", "dnsrr")
_PROTOCOLS = ("", "tcp", "udp", "sctp")
_PUBLISH_MODES = ("", "ingress", "host")
_ROLES = ("worker", "manager")
_AVAILABILITIES = ("active", "pause", "drain")


def validate_service_spec(spec: ServiceSpec) -> None:
    for check in _SERVICE_CHECKS:
        check(spec)


def normalize_service_spec(spec: ServiceSpec) -> ServiceSpec:
    """The spec as stored; call after `validate_service_spec` (it relies on a ContainerSpec)."""
    task = spec.task_template or TaskSpec()
    container = task.container_spec or ContainerSpec()
    return replace(
        spec,
        labels=spec.labels if spec.labels is not None else {},
        mode=_normal_mode(spec.mode),
        task_template=replace(
            task,
            runtime=task.runtime or "container",
            container_spec=replace(container, isolation=container.isolation or "default"),
        ),
    )


def _normal_mode(mode: ServiceMode | None) -> ServiceMode:
    if mode is None or not set_modes(mode):
        return ServiceMode(replicated=ReplicatedService(replicas=1))
    if mode.replicated is not None and mode.replicated.replicas is None:
        return replace(mode, replicated=ReplicatedService(replicas=1))
    if mode.replicated_job is not None:
        job = mode.replicated_job
        concurrent = 1 if job.max_concurrent is None else job.max_concurrent
        total = concurrent if job.total_completions is None else job.total_completions
        return replace(mode, replicated_job=ReplicatedJob(max_concurrent=concurrent, total_completions=total))
    return mode


def upgrade_service_spec(raw: Any) -> Any:
    """The top-level `Networks` of API < 1.44 (still sent by SDKs such as aiodocker): dockerd moves
    it into `TaskTemplate.Networks` when that is empty, and so does this."""
    if not isinstance(raw, dict) or "Networks" not in raw:
        return raw
    upgraded = {k: v for k, v in raw.items() if k != "Networks"}
    template = upgraded.get("TaskTemplate")
    if raw["Networks"] and isinstance(template, dict) and not template.get("Networks"):
        upgraded["TaskTemplate"] = {**template, "Networks": raw["Networks"]}
    return upgraded


def validate_node_spec(spec: NodeSpec) -> None:
    if spec.role not in _ROLES:
        raise InvalidParameter(f"invalid Role: {spec.role!r}")
    if spec.availability not in _AVAILABILITIES:
        raise InvalidParameter(f"invalid Availability: {spec.availability!r}")


# -- helpers -------------------------------------------------------------------------------------


def _not_negative(path: str, value: float | None) -> None:
    if value is not None and value < 0:
        raise invalid_argument(f"{path}: must not be negative (got {value})")


def _one_of(path: str, value: str | None, allowed: Collection[str]) -> None:
    if value is not None and value not in allowed:
        choices = ", ".join(repr(a) for a in allowed if a)
        raise invalid_argument(f"{path}: {value!r} is not one of {choices}")


def _each_not_negative(prefix: str, values: Iterable[tuple[str, float | None]]) -> None:
    for name, value in values:
        _not_negative(f"{prefix}.{name}", value)


# -- the service checks --------------------------------------------------------------------------


def _check_name(spec: ServiceSpec) -> None:
    if not _NAME.fullmatch(spec.name):
        raise invalid_argument("name must be valid as a DNS name component")
    if len(spec.name) > MAX_NAME:
        raise invalid_argument(f"name must be {MAX_NAME} characters or fewer")


def _check_mode(spec: ServiceSpec) -> None:
    modes = set_modes(spec.mode)
    if len(modes) > 1:
        raise invalid_argument(f"Mode: set only one of Replicated, Global, ReplicatedJob, GlobalJob (got {modes})")
    if spec.mode is None:
        return
    if spec.mode.replicated is not None:
        _not_negative("Mode.Replicated.Replicas", spec.mode.replicated.replicas)
    if (job := spec.mode.replicated_job) is not None:
        _each_not_negative("Mode.ReplicatedJob", [("MaxConcurrent", job.max_concurrent),
                                                  ("TotalCompletions", job.total_completions)])


def _check_runtime(spec: ServiceSpec) -> None:
    """dockerd's own conversion errors, word for word: clients have seen exactly these."""
    task = spec.task_template or TaskSpec()
    if (task.runtime or "") not in _RUNTIMES:
        raise InvalidParameter(f"unsupported runtime {task.runtime!r}: Shoal runs containers only")
    if task.container_spec is None:
        raise InvalidParameter("mismatched Runtime and *Spec fields")


def _check_container(spec: ServiceSpec) -> None:
    container = _task(spec).container_spec or ContainerSpec()
    if not container.image:
        raise invalid_argument("ContainerSpec: image reference must be provided")
    if not valid_reference(container.image):
        raise invalid_argument(f'ContainerSpec: "{container.image}" is not a valid repository/tag')
    _not_negative("TaskTemplate.ContainerSpec.StopGracePeriod", container.stop_grace_period)
    if container.healthcheck is not None:
        _check_health(container.healthcheck)


def _check_health(health: HealthConfig) -> None:
    prefix = "TaskTemplate.ContainerSpec.Healthcheck"
    durations = [("Interval", health.interval), ("Timeout", health.timeout),
                 ("StartPeriod", health.start_period), ("StartInterval", health.start_interval)]
    _each_not_negative(prefix, [*durations, ("Retries", health.retries)])
    for name, value in durations:
        if value and value < MIN_HEALTH_INTERVAL:
            raise invalid_argument(f"{prefix}.{name}: cannot be less than 1ms (got {value}ns)")


def _check_resources(spec: ServiceSpec) -> None:
    resources = _task(spec).resources
    if resources is None:
        return
    parts: list[tuple[str, ResourceLimits | ResourceReservations | None]] = [
        ("Limits", resources.limits), ("Reservations", resources.reservations)]
    for name, part in parts:
        if part is not None:
            _check_amounts(f"TaskTemplate.Resources.{name}", part.nano_cpus, part.memory_bytes)
    if resources.limits is not None:
        _not_negative("TaskTemplate.Resources.Limits.Pids", resources.limits.pids)


def _check_amounts(prefix: str, nano_cpus: int | None, memory: int | None) -> None:
    if nano_cpus and not nano_cpus >= MIN_NANO_CPUS:
        raise invalid_argument(f"{prefix}.NanoCPUs: invalid cpu value {nano_cpus / 1e9:g}: Must be at least 0.001")
    if memory and not memory >= MIN_MEMORY:
        raise invalid_argument(f"{prefix}.MemoryBytes: invalid memory value {memory}: Must be at least 4MiB")


def _check_restart(spec: ServiceSpec) -> None:
    policy = _task(spec).restart_policy or RestartPolicy()
    prefix = "TaskTemplate.RestartPolicy"
    _one_of(f"{prefix}.Condition", policy.condition, _CONDITIONS)
    _each_not_negative(prefix, [("Delay", policy.delay), ("MaxAttempts", policy.max_attempts),
                                ("Window", policy.window)])


def _check_placement(spec: ServiceSpec) -> None:
    placement = _task(spec).placement or Placement()
    prefix = "TaskTemplate.Placement"
    for constraint in placement.constraints or ():
        _check_constraint(constraint)
    for i, pref in enumerate(placement.preferences or ()):
        if pref.spread is None or not pref.spread.spread_descriptor:
            raise invalid_argument(f"{prefix}.Preferences[{i}].Spread.SpreadDescriptor: must not be empty")
    _not_negative(f"{prefix}.MaxReplicas", placement.max_replicas)


def _check_constraint(constraint: str) -> None:
    """The same parser the scheduler uses, so a constraint accepted here is one it can apply."""
    try:
        constraints.parse(constraint)
    except constraints.ConstraintError as e:
        raise invalid_argument(f"TaskTemplate.Placement.Constraints: invalid constraint {constraint!r}: {e}") from e


def _check_updates(spec: ServiceSpec) -> None:
    configs: list[tuple[str, UpdateConfig | None, tuple[str, ...]]] = [
        ("UpdateConfig", spec.update_config, _UPDATE_ACTIONS),
        ("RollbackConfig", spec.rollback_config, _ROLLBACK_ACTIONS),
    ]
    for name, config, actions in configs:
        if config is not None:
            _check_update_config(name, config, actions)


def _check_update_config(prefix: str, config: UpdateConfig, actions: tuple[str, ...]) -> None:
    _each_not_negative(prefix, [("Parallelism", config.parallelism), ("Delay", config.delay),
                                ("Monitor", config.monitor)])
    ratio = config.max_failure_ratio
    if ratio is not None and not 0 <= ratio <= 1:
        raise invalid_argument(f"{prefix}.MaxFailureRatio: must be between 0 and 1 (got {ratio})")
    _one_of(f"{prefix}.FailureAction", config.failure_action, actions)
    _one_of(f"{prefix}.Order", config.order, _ORDERS)


def _check_endpoint(spec: ServiceSpec) -> None:
    endpoint = spec.endpoint_spec or EndpointSpec()
    _one_of("EndpointSpec.Mode", endpoint.mode, _ENDPOINT_MODES)
    seen: set[tuple[int, str]] = set()
    for i, port in enumerate(endpoint.ports or ()):
        _check_port(f"EndpointSpec.Ports[{i}]", port)
        ingress = (port.publish_mode or "ingress") == "ingress"
        if ingress and endpoint.mode == "dnsrr":
            raise invalid_argument("EndpointSpec: port published with ingress mode can't be used with dnsrr mode")
        if ingress and not port.published_port:
            continue  # the port is assigned later; unassigned ports cannot collide yet
        key = (port.published_port or 0, port.protocol or "tcp")
        if key in seen:
            raise invalid_argument("EndpointSpec: duplicate published ports provided")
        seen.add(key)


def _check_port(prefix: str, port: PortConfig) -> None:
    _one_of(f"{prefix}.Protocol", port.protocol, _PROTOCOLS)
    _one_of(f"{prefix}.PublishMode", port.publish_mode, _PUBLISH_MODES)
    for name, number in (("TargetPort", port.target_port), ("PublishedPort", port.published_port)):
        if number is not None and not 0 <= number <= MAX_PORT:
            raise invalid_argument(f"{prefix}.{name}: {number} is not a port number (0-{MAX_PORT})")


def _task(spec: ServiceSpec) -> TaskSpec:
    return spec.task_template or TaskSpec()


_SERVICE_CHECKS: list[Callable[[ServiceSpec], None]] = [
    _check_name,
    _check_mode,
    _check_runtime,
    _check_container,
    _check_resources,
    _check_restart,
    _check_placement,
    _check_updates,
    _check_endpoint,
]
