"""`--with-registry-auth`: the X-Registry-Auth header lands in the stored spec's PullOptions, is kept
across updates as `registryAuthFrom` says, and is never shown back to clients."""

from __future__ import annotations

import base64
import json

from schemas.service import ContainerSpec, PullOptions, TaskSpec
from schemas.task import Task
from services.api.registry_auth import pull_options
from services.api.views import task_view
from tests.unit.test_api_app import SPEC, Harness, h

__all__ = ["h"]  # the fixture, re-used from the gateway tests

AUTH = base64.urlsafe_b64encode(json.dumps({"username": "ann", "password": "s3cret"}).encode()).decode()
OTHER = base64.urlsafe_b64encode(json.dumps({"username": "bob", "password": "pw"}).encode()).decode()


def stored(h: Harness, service_id: str) -> str | None:
    options = pull_options(h.api.state.services[service_id].spec)
    return options.registry_auth if options is not None else None


async def test_create_stores_the_header_and_never_shows_it(h: Harness) -> None:
    response = await h.client.post("/v1.41/services/create", json=SPEC, headers={"X-Registry-Auth": AUTH})
    assert response.status == 201, await response.text()
    service_id = (await response.json())["ID"]
    assert stored(h, service_id) == AUTH
    for defaults in ("true", "false"):
        shown = await h.service(service_id, insertDefaults=defaults)
        assert "PullOptions" not in json.dumps(shown) and "s3cret" not in json.dumps(shown)


async def test_a_body_cannot_set_credentials_without_the_header(h: Harness) -> None:
    spec = {**SPEC, "TaskTemplate": {**SPEC["TaskTemplate"], "ContainerSpec": {
        **SPEC["TaskTemplate"]["ContainerSpec"], "PullOptions": {"RegistryAuth": AUTH}}}}
    service_id = await h.create(**spec)
    assert stored(h, service_id) is None


async def test_updates_keep_replace_or_take_the_previous_credentials(h: Harness) -> None:
    response = await h.client.post("/v1.41/services/create", json=SPEC, headers={"X-Registry-Auth": AUTH})
    service_id = (await response.json())["ID"]
    current = (await h.service(service_id))["Spec"]
    await h.update(service_id, {**current, "Labels": {"a": "1"}}, registryAuthFrom="spec")
    assert stored(h, service_id) == AUTH, "an update without the header keeps the spec's credentials"
    version = str((await h.service(service_id))["Version"]["Index"])
    response = await h.client.post(f"/v1.41/services/{service_id}/update", json=current,
                                   params={"version": version}, headers={"X-Registry-Auth": OTHER})
    assert response.status == 200, await response.text()
    assert stored(h, service_id) == OTHER
    for defaults in ("true", "false"):  # neither the spec's nor the previous spec's are shown
        shown = json.dumps(await h.service(service_id, insertDefaults=defaults))
        assert "PreviousSpec" in shown and "PullOptions" not in shown and AUTH not in shown and OTHER not in shown
    await h.update(service_id, current, registryAuthFrom="previous-spec")
    assert stored(h, service_id) == AUTH
    version = str((await h.service(service_id))["Version"]["Index"])
    message = await h.error("POST", f"/v1.41/services/{service_id}/update", 400, current,
                            params={"version": version, "registryAuthFrom": "bogus"})
    assert message == "unsupported registryAuthFrom 'bogus'"


def test_tasks_are_shown_without_credentials() -> None:
    spec = TaskSpec(container_spec=ContainerSpec(image="x", pull_options=PullOptions(registry_auth=AUTH)))
    shown = task_view(Task(id="t", spec=spec))
    assert shown.spec.container_spec is not None and shown.spec.container_spec.pull_options is None


async def test_the_audit_views_never_show_credentials_or_join_tokens(h: Harness) -> None:
    """The log must carry both secrets (agents pull and check joins with them); /shoal/ shows neither."""
    response = await h.client.post("/v1.41/services/create", json=SPEC, headers={"X-Registry-Auth": AUTH})
    assert response.status == 201, await response.text()
    swarm = await h.call("GET", "/v1.41/swarm")
    tokens = swarm["JoinTokens"]
    await h.call("POST", "/v1.41/swarm/update", 200, swarm["Spec"],
                 params={"rotateWorkerToken": "true", "version": str(swarm["Version"]["Index"])})
    rotated = (await h.call("GET", "/v1.41/swarm"))["JoinTokens"]["Worker"]
    assert rotated != tokens["Worker"]
    events = await (await h.client.get("/shoal/events")).text()
    state = await (await h.client.get("/shoal/state", params={"at": "1000"})).text()
    now = await (await h.client.get("/shoal/state")).text()
    for shown in (events, state, now):
        assert AUTH not in shown and "s3cret" not in shown
        assert all(token not in shown for token in (*tokens.values(), rotated))
    assert "JoinTokenRotated" in events and "<redacted>" in events, "the rotation itself stays visible"
