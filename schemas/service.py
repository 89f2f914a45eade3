"""Service specs and services, field for field as the Docker Engine API spells them."""

from __future__ import annotations

from typing import Any

import msgspec

from schemas.base import Labels, Nanos, Record, Version, Wire


class HealthConfig(Wire):
    test: list[str] | None = None
    interval: Nanos | None = None
    timeout: Nanos | None = None
    retries: int | None = None
    start_period: Nanos | None = None
    start_interval: Nanos | None = None


class PullOptions(Wire):
    """Swarm keeps `docker service create --with-registry-auth`'s X-Registry-Auth header here, so
    agents can pull private images. Never shown by the API (the Engine API has no such field)."""

    registry_auth: str | None = None


class ContainerSpec(Wire):
    image: str = ""
    labels: Labels | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    hostname: str | None = None
    env: list[str] | None = None
    dir: str | None = None
    user: str | None = None
    groups: list[str] | None = None
    privileges: dict[str, Any] | None = None
    tty: bool | None = msgspec.field(default=None, name="TTY")
    open_stdin: bool | None = None
    read_only: bool | None = None
    mounts: list[dict[str, Any]] | None = None
    stop_signal: str | None = None
    stop_grace_period: Nanos | None = None
    healthcheck: HealthConfig | None = None
    hosts: list[str] | None = None
    dns_config: dict[str, Any] | None = msgspec.field(default=None, name="DNSConfig")
    secrets: list[dict[str, Any]] | None = None
    configs: list[dict[str, Any]] | None = None
    isolation: str | None = None
    init: bool | None = None
    sysctls: dict[str, str] | None = None
    capability_add: list[str] | None = None
    capability_drop: list[str] | None = None
    ulimits: list[dict[str, Any]] | None = None
    oom_score_adj: int | None = None
    pull_options: PullOptions | None = None


class ResourceLimits(Wire):
    nano_cpus: int | None = msgspec.field(default=None, name="NanoCPUs")
    memory_bytes: int | None = None
    pids: int | None = None


class NamedResourceSpec(Wire):
    """One identified unit of a kind (`gpu=GPU-4f2a`): a node advertises it, a task never asks for one by name."""

    kind: str = ""
    value: str = ""


class DiscreteResourceSpec(Wire):
    """A count of a kind (`gpu=2`): what a node has of it, or what a task reserves."""

    kind: str = ""
    value: int = 0


class GenericResource(Wire):
    """Docker's `GenericResources` item: exactly one of the two specs is set."""

    named_resource_spec: NamedResourceSpec | None = None
    discrete_resource_spec: DiscreteResourceSpec | None = None


class ResourceReservations(Wire):
    nano_cpus: int | None = msgspec.field(default=None, name="NanoCPUs")
    memory_bytes: int | None = None
    generic_resources: list[GenericResource] | None = None


class Resources(Wire):
    limits: ResourceLimits | None = None
    reservations: ResourceReservations | None = None


class RestartPolicy(Wire):
    condition: str | None = None
    delay: Nanos | None = None
    max_attempts: int | None = None
    window: Nanos | None = None


class SpreadOver(Wire):
    spread_descriptor: str = ""


class PlacementPreference(Wire):
    spread: SpreadOver | None = None


class Platform(Wire):
    architecture: str | None = None
    os: str | None = msgspec.field(default=None, name="OS")


class Placement(Wire):
    constraints: list[str] | None = None
    preferences: list[PlacementPreference] | None = None
    max_replicas: int | None = None
    platforms: list[Platform] | None = None


class TaskSpec(Wire):
    container_spec: ContainerSpec | None = None
    resources: Resources | None = None
    restart_policy: RestartPolicy | None = None
    placement: Placement | None = None
    networks: list[dict[str, Any]] | None = None
    log_driver: dict[str, Any] | None = None
    force_update: int | None = None
    runtime: str | None = None


class ReplicatedService(Wire):
    replicas: int | None = None


class GlobalService(Wire):
    pass


class ReplicatedJob(Wire):
    max_concurrent: int | None = None
    total_completions: int | None = None


class GlobalJob(Wire):
    pass


class ServiceMode(Wire):
    replicated: ReplicatedService | None = None
    global_: GlobalService | None = msgspec.field(default=None, name="Global")
    replicated_job: ReplicatedJob | None = None
    global_job: GlobalJob | None = None


class UpdateConfig(Wire):
    parallelism: int | None = None
    delay: Nanos | None = None
    failure_action: str | None = None
    monitor: Nanos | None = None
    max_failure_ratio: float | None = None
    order: str | None = None


class PortConfig(Wire):
    name: str | None = None
    protocol: str | None = None
    target_port: int | None = None
    published_port: int | None = None
    publish_mode: str | None = None


class EndpointSpec(Wire):
    mode: str | None = None
    ports: list[PortConfig] | None = None


class ServiceSpec(Wire):
    name: str = ""
    labels: Labels | None = None
    task_template: TaskSpec | None = None
    mode: ServiceMode | None = None
    update_config: UpdateConfig | None = None
    rollback_config: UpdateConfig | None = None
    endpoint_spec: EndpointSpec | None = None


class UpdateStatus(Record):
    state: str = ""
    started_at: str | None = None
    completed_at: str | None = None
    message: str = ""


class Endpoint(Wire):
    spec: EndpointSpec | None = None
    ports: list[PortConfig] | None = None


class ServiceStatus(Record):
    running_tasks: int = 0
    desired_tasks: int = 0
    completed_tasks: int = 0


class JobStatus(Record):
    """Which run of a job this is: every update of a job service starts a new iteration."""

    job_iteration: Version = Version()
    last_execution: str | None = None


class Service(Record):
    """A service as the projection holds it and the Engine API returns it.

    `SpecVersion` is Shoal's (and swarmkit's internal) marker of the last spec change; tasks copy it,
    so "is this task up to date" is one integer comparison. Docker clients ignore the extra field.
    """

    id: str = msgspec.field(default="", name="ID")
    version: Version = Version()
    created_at: str = ""
    updated_at: str = ""
    spec: ServiceSpec = msgspec.field(default_factory=ServiceSpec)
    previous_spec: ServiceSpec | None = None
    endpoint: Endpoint | None = None
    update_status: UpdateStatus | None = None
    service_status: ServiceStatus | None = None
    job_status: JobStatus | None = None
    """Set for ReplicatedJob and GlobalJob services only, as dockerd does."""
    spec_version: Version = Version()
