"""Secrets the log has to carry but no person reading it should see.

Join tokens are in the log because agents check a joining node's token against it, and registry
credentials (`--with-registry-auth`) because agents hand them to the engine's pull. Everything that
shows the log or the state to people (`/shoal/events`, `/shoal/state`, the audit journal) shows it
through these functions, so an auditor learns that a token was rotated or credentials were sent,
never the secret itself.
"""

from __future__ import annotations

from msgspec.structs import replace

from schemas.events import (
    ClusterCreated,
    Envelope,
    Event,
    JoinTokenRotated,
    ServiceCreated,
    ServiceUpdated,
    TaskAssigned,
    TaskCreated,
)
from schemas.service import PullOptions, Service, ServiceSpec, TaskSpec
from schemas.task import Task
from services.kernel.state import Cluster

REDACTED = "<redacted>"


def task_with_pull_options(template: TaskSpec, options: PullOptions | None) -> TaskSpec:
    container = template.container_spec
    if container is None or container.pull_options == options:
        return template
    return replace(template, container_spec=replace(container, pull_options=options))


def with_pull_options(spec: ServiceSpec, options: PullOptions | None) -> ServiceSpec:
    template = spec.task_template
    if template is None:
        return spec
    return replace(spec, task_template=task_with_pull_options(template, options))


def _secret(value: str) -> str:
    return REDACTED if value else ""


def public_task(task: Task) -> Task:
    spec = task_with_pull_options(task.spec, None)
    return task if spec is task.spec else replace(task, spec=spec)


def public_service(service: Service) -> Service:
    spec = with_pull_options(service.spec, None)
    previous = with_pull_options(service.previous_spec, None) if service.previous_spec is not None else None
    if spec is service.spec and previous is service.previous_spec:
        return service
    return replace(service, spec=spec, previous_spec=previous)


def public_cluster(cluster: Cluster) -> Cluster:
    return replace(cluster, worker_token=_secret(cluster.worker_token), manager_token=_secret(cluster.manager_token))


def public_event(event: Event) -> Event:
    match event:
        case ClusterCreated():
            return replace(event, worker_token=_secret(event.worker_token),
                           manager_token=_secret(event.manager_token))
        case JoinTokenRotated():
            return replace(event, token=_secret(event.token))
        case ServiceCreated() | ServiceUpdated():
            spec = with_pull_options(event.spec, None)
            return event if spec is event.spec else replace(event, spec=spec)
        case TaskCreated() | TaskAssigned():
            task = public_task(event.task)
            return event if task is event.task else replace(event, task=task)
    return event


def public_envelope(env: Envelope) -> Envelope:
    event = public_event(env.event)
    return env if event is env.event else replace(env, event=event)
