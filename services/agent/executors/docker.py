"""The `docker` executor: each task is a container on a Docker engine, driven with aiodocker.

Containers carry Swarm's labels (`com.docker.swarm.node.id`, `.service.id`, `.task.id` ...), so
several agents can share one engine and each touches only the containers of its own nodes, and an
agent that restarts finds and adopts its containers instead of starting new ones. Docker's own
restart policy is never set: restarts are the orchestrator's decision.

Health: the engine runs the spec's health check (or the image's); its state comes back in every
inspect and its changes through `health_status` events, so the agent can hold a task at `starting`
until the container is healthy. Registry auth: the X-Registry-Auth value Swarm keeps in the spec's
`PullOptions` is sent as is on the pull.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncGenerator
from typing import Any

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError
from aiodocker.jsonstream import json_stream_list

from schemas.logs import LogBatch, LogQuery
from schemas.service import ContainerSpec
from schemas.task import Task
from services.agent.executor import Container, ExecutorError, Health, NoSuchContainer, OnChange, Phase, stop_grace_s
from services.agent.executors.docker_logs import container_logs
from services.agent.ports import port_env

log = logging.getLogger(__name__)

NODE_LABEL = "com.docker.swarm.node.id"
TASK_LABEL = "com.docker.swarm.task.id"

_WATCH_PAUSE_S = 0.5
_WATCH_MAX_PAUSE_S = 10.0
"""How long the events watch waits before it reconnects: first, and at most while failures repeat."""
_REMOVING = "is already in progress"
"""The end of the engine's 409 for a container another call is removing (its other 409s are failures)."""

_HEALTH = {"starting": Health.STARTING, "healthy": Health.HEALTHY, "unhealthy": Health.UNHEALTHY}
"""The engine's `State.Health.Status` (and `health_status: X` event actions) as a `Health`."""


def container_name(task: Task) -> str:
    """Swarm's naming: `<service>.<slot>.<task id>`, or `<service>.<node id>.<task id>` for slot 0."""
    return f"{task.service_name or task.service_id}.{task.slot or task.node_id}.{task.id}"


def labels(task: Task) -> dict[str, str]:
    spec = task.spec.container_spec or ContainerSpec()
    return {
        **(spec.labels or {}),
        **task.labels,
        NODE_LABEL: task.node_id,
        "com.docker.swarm.service.id": task.service_id,
        "com.docker.swarm.service.name": task.service_name,
        "com.docker.swarm.task": "",
        TASK_LABEL: task.id,
        "com.docker.swarm.task.name": container_name(task).rsplit(".", 1)[0] + f".{task.id}",
    }


def create_config(task: Task, addr: str = "127.0.0.1") -> dict[str, Any]:
    """The engine's container config for a task: a pure translation, so it is tested without an engine.

    A task that publishes ports runs in the host's network (Shoal's engines have no bridge): it listens
    on the node-local port its environment names (`services/agent/ports.py`), which the mesh reaches."""
    spec = task.spec.container_spec or ContainerSpec()
    ports = port_env(task, addr)
    resources = task.spec.resources
    limits = resources.limits if resources else None
    reservations = resources.reservations if resources else None
    host: dict[str, Any] = {"NetworkMode": "host" if ports else "none", "RestartPolicy": {"Name": "no"},
                            "Init": spec.init}
    if limits and limits.nano_cpus:
        host["NanoCpus"] = limits.nano_cpus
    if limits and limits.memory_bytes:
        host["Memory"] = limits.memory_bytes
    if limits and limits.pids:
        host["PidsLimit"] = limits.pids
    if reservations and reservations.memory_bytes:
        host["MemoryReservation"] = reservations.memory_bytes
    config: dict[str, Any] = {
        "Image": spec.image,
        "Labels": labels(task),
        "Env": [*(spec.env or []), *(f"{k}={v}" for k, v in ports.items())],
        "Hostname": spec.hostname or "",
        "User": spec.user or "",
        "WorkingDir": spec.dir or "",
        "Tty": bool(spec.tty),
        "OpenStdin": bool(spec.open_stdin),
        "StopTimeout": _whole_seconds(task),
        "HostConfig": host,
    }
    if spec.command:
        config["Entrypoint"] = spec.command
    if spec.args:
        config["Cmd"] = spec.args
    if spec.stop_signal:
        config["StopSignal"] = spec.stop_signal
    if spec.healthcheck is not None:
        config["Healthcheck"] = {k: v for k, v in {
            "Test": spec.healthcheck.test, "Interval": spec.healthcheck.interval,
            "Timeout": spec.healthcheck.timeout, "Retries": spec.healthcheck.retries,
            "StartPeriod": spec.healthcheck.start_period,
        }.items() if v is not None}
    return config


def _whole_seconds(task: Task) -> int:
    """The engine counts the stop grace in whole seconds; round up so a task never gets less."""
    return math.ceil(stop_grace_s(task))


def observed(info: dict[str, Any]) -> Container:
    """A `Container` from the engine's inspect (or list) output."""
    labels_ = info.get("Config", {}).get("Labels") or info.get("Labels") or {}
    state = info.get("State") or {}
    status = state.get("Status", "") if isinstance(state, dict) else str(state)
    phase = Phase.RUNNING if status in ("running", "paused", "restarting") else (
        Phase.CREATED if status == "created" else Phase.EXITED)
    health = (state.get("Health") or {}).get("Status", "") if isinstance(state, dict) else ""
    return Container(
        task_id=labels_.get(TASK_LABEL, ""),
        node_id=labels_.get(NODE_LABEL, ""),
        phase=phase,
        container_id=info.get("Id", ""),
        pid=int(state.get("Pid", 0)) if isinstance(state, dict) else 0,
        exit_code=int(state.get("ExitCode", 0)) if isinstance(state, dict) else 0,
        health=_HEALTH.get(health, Health.NONE),
    )


def from_event(event: dict[str, Any]) -> Container:
    """A `die` or `health_status: X` event as an observation of the container."""
    attrs = event.get("Actor", {}).get("Attributes", {})
    action = str(event.get("Action", ""))
    task_id, node_id, cid = attrs.get(TASK_LABEL, ""), attrs.get(NODE_LABEL, ""), event.get("id", "")
    if action.startswith("health_status"):
        health = _HEALTH.get(action.partition(":")[2].strip(), Health.NONE)
        return Container(task_id=task_id, node_id=node_id, phase=Phase.RUNNING, container_id=cid, health=health)
    return Container(task_id=task_id, node_id=node_id, phase=Phase.EXITED, container_id=cid,
                     exit_code=int(attrs.get("exitCode", 0)))


def _engine_time(event: dict[str, Any]) -> str:
    """An event's time as the engine's `since` parameter takes it (`seconds.nanoseconds`)."""
    nanos = event.get("timeNano")
    return f"{nanos // 1_000_000_000}.{nanos % 1_000_000_000:09d}" if isinstance(nanos, int) else ""


def pull_params(image: str) -> dict[str, Any]:
    """`fromImage` and `tag` as `docker pull` sends them: no tag means `latest`; a digest is kept whole."""
    if "@" in image:
        return {"fromImage": image}
    name, colon, tag = image.rpartition(":")
    if colon and "/" not in tag:
        return {"fromImage": name, "tag": tag}
    return {"fromImage": image, "tag": "latest"}


def registry_auth(task: Task) -> str:
    """The X-Registry-Auth value the service was created (or updated) with, if any."""
    pull = (task.spec.container_spec or ContainerSpec()).pull_options
    return (pull.registry_auth or "") if pull is not None else ""


def _message(e: DockerError) -> str:
    msg = e.message if isinstance(e.message, str) else json.dumps(e.message)
    return msg.strip()


class DockerExecutor:
    kind = "docker"

    def __init__(self, engine: str, node_ids: list[str], addr: str = "127.0.0.1") -> None:
        self.engine = engine
        self.node_ids = node_ids
        self.addr = addr
        self.docker = aiodocker.Docker(url=engine)
        self._ids: dict[str, str] = {}
        self._watch: asyncio.Task[None] | None = None

    async def describe(self) -> dict[str, Any]:
        """The engine's /info: hostname, CPUs, memory, labels, OS and version for the node description."""
        return dict(await self.docker.system.info())

    async def prepare(self, task: Task) -> Container:
        """Create, as `docker run` does: pull only when the engine says the image is missing. One
        engine call in the common case; a container this executor has seen already is inspected."""
        known = self._ids.get(task.id)
        if known:
            return await self._inspect(known)
        image = (task.spec.container_spec or ContainerSpec()).image
        if not image:
            raise ExecutorError("no image in the task's ContainerSpec")
        try:
            return await self._create(task)
        except DockerError as e:
            if e.status != 404:
                return await self._created_before(task, e)
        try:
            await self._pull(image, registry_auth(task))
        except DockerError as e:
            raise ExecutorError(_message(e)) from e
        try:
            return await self._create(task)
        except DockerError as e:
            return await self._created_before(task, e)

    async def _create(self, task: Task) -> Container:
        created = await self.docker.containers.create(create_config(task, self.addr), name=container_name(task))
        self._ids[task.id] = created.id
        return Container(task_id=task.id, node_id=task.node_id, phase=Phase.CREATED, container_id=created.id)

    async def _created_before(self, task: Task, e: DockerError) -> Container:
        """A failed create: a name conflict (409) means an earlier attempt that did not return created
        the container, which is then the result; anything else is the error the task shows."""
        if e.status == 409:
            found = await self._find(task.id)
            if found is not None:
                return found
        raise ExecutorError(_message(e), temporary=e.status >= 500) from e

    async def _pull(self, image: str, auth: str) -> None:
        """`POST /images/create` with the header exactly as the docker CLI sent it to the API.
        aiodocker's `images.pull` would re-encode it and refuses auth for images without a registry
        host (Docker Hub's), so the request is made through its request helper directly."""
        headers = {"X-Registry-Auth": auth} if auth else {}
        async with self.docker._query("images/create", "POST", params=pull_params(image),
                                      headers=headers, timeout=None) as response:
            await json_stream_list(response)  # raises DockerStreamError on an error in the progress stream

    async def start(self, task: Task) -> Container:
        cid = self._ids.get(task.id) or getattr(await self._find(task.id), "container_id", "")
        if not cid:
            raise ExecutorError(f"task {task.id} has no container: prepare it first")
        container = self.docker.containers.container(cid)
        try:
            await container.start()
        except DockerError as e:
            if e.status != 304:  # 304: already started
                raise ExecutorError(_message(e)) from e
        return await self._inspect(cid)

    async def stop(self, task: Task) -> Container:
        cid = self._ids.get(task.id) or getattr(await self._find(task.id), "container_id", "")
        if not cid:
            return Container(task_id=task.id, node_id=task.node_id, phase=Phase.EXITED)
        try:
            await self.docker.containers.container(cid).stop(t=_whole_seconds(task))
        except DockerError as e:
            if e.status not in (304, 404):
                raise ExecutorError(_message(e), temporary=True) from e
        return await self._inspect(cid)

    async def remove(self, task_id: str) -> None:
        """Gone already (404) or being removed by an earlier call (409) is done; any other failure
        is temporary, so the worker tries again rather than leave the container behind."""
        cid = self._ids.pop(task_id, "") or getattr(await self._find(task_id), "container_id", "")
        if not cid:
            return
        try:
            await self.docker.containers.container(cid).delete(force=True)
        except DockerError as e:
            if not (e.status == 404 or (e.status == 409 and _REMOVING in _message(e))):
                raise ExecutorError(_message(e), temporary=True) from e

    async def list(self) -> list[Container]:
        found: list[Container] = []
        for node in self.node_ids:
            raw = await self.docker.containers.list(all=True, filters=json.dumps({"label": [f"{NODE_LABEL}={node}"]}))
            found += [await self._inspect(c.id) for c in raw]  # the list omits exit codes
        for c in found:
            self._ids[c.task_id] = c.container_id
        return found

    async def adopt(self, container: Container) -> Container:
        self._ids[container.task_id] = container.container_id
        return await self._inspect(container.container_id)

    def watch(self, on_change: OnChange) -> None:
        self._watch = asyncio.get_running_loop().create_task(self._events(on_change))

    async def _events(self, on_change: OnChange) -> None:
        """Follow the engine's `die` and `health_status` events for our nodes' containers; reconnect if
        the stream ends. Events of the gap are lost (a `healthy` sent once, an exit), so after a
        reconnect every known container is inspected again and reported. Whatever fails, the watch
        goes on after a pause that grows while failures repeat."""
        # The engine ANDs label filters: filter on the key, pick this process's nodes here.
        filters = json.dumps({"type": ["container"], "event": ["die", "health_status"], "label": [NODE_LABEL]})
        ours = set(self.node_ids)
        reconnect, pause, since = False, _WATCH_PAUSE_S, ""
        while True:
            # aiodocker's events API is untyped; DockerEvents is its public events client.
            events = aiodocker.docker.DockerEvents(self.docker)  # type: ignore[no-untyped-call]
            try:
                # `since` (the engine's time of the last event seen) replays what it still holds of the
                # gap, including what happens while the stream connects and the inspections run.
                params = {"filters": filters, **({"since": since} if since else {})}
                subscriber = events.subscribe(**params)  # type: ignore[no-untyped-call]
                if reconnect:
                    await self._reinspect(on_change)
                while (event := await subscriber.get()) is not None:
                    if event.get("Actor", {}).get("Attributes", {}).get(NODE_LABEL) in ours:
                        on_change(from_event(event))
                    since = _engine_time(event) or since
                    pause = _WATCH_PAUSE_S
                await events.stop()  # type: ignore[no-untyped-call]  # raises what ended the stream
            except (DockerError, OSError, aiohttp.ClientError) as e:
                log.warning("docker events stream lost", extra={"error": str(e)})
            except Exception:  # a bug or an unexpected reply must not end the watch for good
                log.exception("docker events watch failed")
            finally:
                with contextlib.suppress(Exception):  # a no-op once stopped; on the way out, nothing to add
                    await events.stop()  # type: ignore[no-untyped-call]
            reconnect = True
            await asyncio.sleep(pause)
            pause = min(pause * 2, _WATCH_MAX_PAUSE_S)

    async def _reinspect(self, on_change: OnChange) -> None:
        for task_id, cid in list(self._ids.items()):
            try:
                on_change(await self._inspect(cid))
            except ExecutorError as e:
                log.info("cannot inspect a watched container", extra={"task_id": task_id, "error": str(e)})

    async def _find(self, task_id: str) -> Container | None:
        raw = await self.docker.containers.list(all=True, filters=json.dumps({"label": [f"{TASK_LABEL}={task_id}"]}))
        mine = [observed(c._container) for c in raw if c._container.get("Labels", {}).get(NODE_LABEL) in self.node_ids]
        if mine:
            self._ids[task_id] = mine[0].container_id
        return mine[0] if mine else None

    async def _inspect(self, cid: str) -> Container:
        try:
            info = await self.docker.containers.container(cid).show()
        except DockerError as e:
            raise ExecutorError(_message(e), temporary=e.status >= 500) from e
        return observed(info)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.docker.close()

    async def logs(self, task_id: str, query: LogQuery) -> AsyncGenerator[LogBatch, None]:
        cid = self._ids.get(task_id) or getattr(await self._find(task_id), "container_id", "")
        if not cid:
            raise NoSuchContainer(task_id)
        async for batch in container_logs(self.docker, cid, query):
            yield batch
