"""What `GET /services/{id}?insertDefaults=true` fills in: swarmkit's `InterpolateService`.

`docker service inspect` asks for it so operators see the values in force. Only absent parts are
filled; anything the spec sets, even partially, is shown as stored (as swarmkit does).
"""

from __future__ import annotations

from msgspec.structs import replace

from schemas.service import (
    ContainerSpec,
    Placement,
    ResourceLimits,
    ResourceReservations,
    Resources,
    RestartPolicy,
    ServiceSpec,
    TaskSpec,
    UpdateConfig,
)

SECOND = 1_000_000_000

STOP_GRACE_PERIOD = 10 * SECOND
RESTART_POLICY = RestartPolicy(condition="any", delay=5 * SECOND, max_attempts=0)
UPDATE_CONFIG = UpdateConfig(
    parallelism=1, failure_action="pause", monitor=5 * SECOND, max_failure_ratio=0.0, order="stop-first"
)
"""Also the rollback default: swarmkit uses the same values for both."""


def insert_defaults(spec: ServiceSpec) -> ServiceSpec:
    task = spec.task_template or TaskSpec()
    return replace(
        spec,
        task_template=_task_defaults(task),
        update_config=spec.update_config or UPDATE_CONFIG,
        rollback_config=spec.rollback_config or UPDATE_CONFIG,
    )


def _task_defaults(task: TaskSpec) -> TaskSpec:
    return replace(
        task,
        container_spec=_container_defaults(task.container_spec),
        resources=task.resources or Resources(limits=ResourceLimits(), reservations=ResourceReservations()),
        restart_policy=_restart_defaults(task.restart_policy),
        placement=task.placement or Placement(),
    )


def _container_defaults(container: ContainerSpec | None) -> ContainerSpec | None:
    if container is None:
        return None
    grace = container.stop_grace_period
    return replace(
        container,
        stop_grace_period=STOP_GRACE_PERIOD if grace is None else grace,
        dns_config={} if container.dns_config is None else container.dns_config,
    )


def _restart_defaults(policy: RestartPolicy | None) -> RestartPolicy:
    if policy is None:
        return RESTART_POLICY
    if policy.delay is None:
        return replace(policy, delay=RESTART_POLICY.delay)
    return policy
