"""Registry credentials as Swarm keeps them: `docker service create/update --with-registry-auth` sends
an `X-Registry-Auth` header; the manager stores it in the spec's `ContainerSpec.PullOptions` so the
agents can pull private images, and never shows it back (the Engine API has no such field).

An update without the header keeps the credentials of the spec named by `registryAuthFrom`
(`spec`, the default, or `previous-spec`), as dockerd does, so a `docker service scale` does not
silently drop them. A `PullOptions` in a request body is ignored, as dockerd ignores it.
"""

from __future__ import annotations

from schemas.service import PullOptions, Service, ServiceSpec
from services.api.errors import InvalidParameter
from services.kernel.redact import with_pull_options

HEADER = "X-Registry-Auth"
FROM_SPEC, FROM_PREVIOUS = "spec", "previous-spec"


def pull_options(spec: ServiceSpec | None) -> PullOptions | None:
    template = spec.task_template if spec is not None else None
    container = template.container_spec if template is not None else None
    return container.pull_options if container is not None else None


def on_create(spec: ServiceSpec, header: str | None) -> ServiceSpec:
    return with_pull_options(spec, PullOptions(registry_auth=header) if header else None)


def on_update(spec: ServiceSpec, header: str | None, source: str | None, current: Service) -> ServiceSpec:
    """The header's credentials, or else those of the spec `registryAuthFrom` names."""
    if header:
        return on_create(spec, header)
    if source in (None, "", FROM_SPEC):
        return with_pull_options(spec, pull_options(current.spec))
    if source == FROM_PREVIOUS:
        return with_pull_options(spec, pull_options(current.previous_spec))
    raise InvalidParameter(f"unsupported registryAuthFrom '{source}'")
