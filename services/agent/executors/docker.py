"""The `docker` executor: each task is a container on a Docker engine, driven with aiodocker.

Containers carry Swarm's labels (`com.docker.swarm.node.id`, `.service.id`, `.task.id` ...), so
several agents can share one engine and each touches only the containers of its own nodes, and an
agent that restarts finds and adopts its containers instead of starting new ones. Docker's own
restart policy is never set: restarts are the orchestrator's decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from schemas.service import ContainerSpec
from schemas.task import Task
from services.agent.executor import Container, ExecutorError, OnChange, Phase, stop_grace_s
from services.agent.ports import port_env

log = logging.getLogger(__name__)

NODE_LABEL = "com.docker.swarm.node.id"
TASK_LABEL = "com.docker.swarm.task.id"


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


def _observe(info: dict[str, Any]) -> Container:
    """A `Container` from the engine's inspect (or list) output."""
    labels_ = info.get("Config", {}).get("Labels") or info.get("Labels") or {}
    state = info.get("State") or {}
    status = state.get("Status", "") if isinstance(state, dict) else str(state)
    phase = Phase.RUNNING if status in ("running", "paused", "restarting") else (
        Phase.CREATED if status == "created" else Phase.EXITED)
    return Container(
        task_id=labels_.get(TASK_LABEL, ""),
        node_id=labels_.get(NODE_LABEL, ""),
        phase=phase,
        container_id=info.get("Id", ""),
        pid=int(state.get("Pid", 0)) if isinstance(state, dict) else 0,
        exit_code=int(state.get("ExitCode", 0)) if isinstance(state, dict) else 0,
    )


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

    async def _image(self, task: Task) -> None:
        image = (task.spec.container_spec or ContainerSpec()).image
        if not image:
            raise ExecutorError("no image in the task's ContainerSpec")
        try:
            await self.docker.images.inspect(image)
            return
        except DockerError as e:
            if e.status != 404:
                raise ExecutorError(_message(e), temporary=e.status >= 500) from e
        try:
            await self.docker.images.pull(image)
        except DockerError as e:
            raise ExecutorError(_message(e)) from e

    async def prepare(self, task: Task) -> Container:
        existing = await self._find(task.id)
        if existing is not None:
            return existing
        await self._image(task)
        try:
            created = await self.docker.containers.create(create_config(task, self.addr), name=container_name(task))
        except DockerError as e:
            if e.status == 409:  # created by an earlier attempt that did not return
                found = await self._find(task.id)
                if found is not None:
                    return found
            raise ExecutorError(_message(e), temporary=e.status >= 500) from e
        self._ids[task.id] = created.id
        return Container(task_id=task.id, node_id=task.node_id, phase=Phase.CREATED, container_id=created.id)

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
        cid = self._ids.pop(task_id, "") or getattr(await self._find(task_id), "container_id", "")
        if cid:
            with contextlib.suppress(DockerError):
                await self.docker.containers.container(cid).delete(force=True)

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
        """Follow the engine's `die` events for our nodes' containers; reconnect if the stream ends."""
        filters = json.dumps({"type": ["container"], "event": ["die"],
                              "label": [f"{NODE_LABEL}={n}" for n in self.node_ids]})
        while True:
            # aiodocker's events API is untyped; DockerEvents is its public events client.
            events = aiodocker.docker.DockerEvents(self.docker)  # type: ignore[no-untyped-call]
            subscriber = events.subscribe(filters=filters)  # type: ignore[no-untyped-call]
            try:
                while (event := await subscriber.get()) is not None:
                    attrs = event.get("Actor", {}).get("Attributes", {})
                    on_change(Container(task_id=attrs.get(TASK_LABEL, ""), node_id=attrs.get(NODE_LABEL, ""),
                                        phase=Phase.EXITED, container_id=event.get("id", ""),
                                        exit_code=int(attrs.get("exitCode", 0))))
            except (DockerError, OSError) as e:
                log.warning("docker events stream lost", extra={"error": str(e)})
            finally:
                await events.stop()  # type: ignore[no-untyped-call]
            await asyncio.sleep(0.5)

    async def _find(self, task_id: str) -> Container | None:
        raw = await self.docker.containers.list(all=True, filters=json.dumps({"label": [f"{TASK_LABEL}={task_id}"]}))
        mine = [_observe(c._container) for c in raw if c._container.get("Labels", {}).get(NODE_LABEL) in self.node_ids]
        if mine:
            self._ids[task_id] = mine[0].container_id
        return mine[0] if mine else None

    async def _inspect(self, cid: str) -> Container:
        try:
            info = await self.docker.containers.container(cid).show()
        except DockerError as e:
            raise ExecutorError(_message(e), temporary=e.status >= 500) from e
        return _observe(info)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.docker.close()
