"""Helpers shared by the API tests (unit, integration, e2e); no tests of its own.

`FakeControlPlane` stands in for the agents, the orchestrator and the scheduler, which are other
processes: it appends the events they would (nodes joining, a service's tasks created, assigned
and running), so the API's task and node endpoints have something real to show.
"""

from __future__ import annotations

from itertools import cycle

from schemas.events import (
    AnyEvent,
    NodeJoined,
    TaskAssigned,
    TaskCreated,
    TaskDesiredStateChanged,
    TaskStatusChanged,
)
from schemas.node import EngineDescription, NodeDescription, NodeResources, NodeSpec
from schemas.service import Platform, Service
from schemas.task import Task, TaskState, TaskStatus
from services.kernel.eventlog import Conflict, EventLog
from services.kernel.ids import new_id
from services.kernel.projection import Projection
from services.kernel.writer import Intent, Writer


class FakeControlPlane:
    def __init__(self, eventlog: EventLog) -> None:
        self.log = eventlog
        self.projection = Projection(eventlog)
        self.writer = Writer(eventlog, "test")

    async def start(self) -> None:
        await self.projection.start()

    async def stop(self) -> None:
        await self.projection.stop()

    async def catch_up(self) -> None:
        await self.projection.wait_for(await self.log.last_seq())

    async def append(self, *events: AnyEvent) -> int:
        results = await self.writer.append([Intent(e) for e in events], self.projection.state)
        assert not any(isinstance(r, Conflict) for r in results)
        last = max(r for r in results if isinstance(r, int))
        await self.projection.wait_for(last)
        return last

    async def join(self, hostname: str, role: str = "worker", addr: str = "10.0.0.1") -> str:
        node_id = new_id()
        description = NodeDescription(
            hostname=hostname,
            platform=Platform(architecture="x86_64", os="linux"),
            resources=NodeResources(nano_cpus=2_000_000_000, memory_bytes=4 << 30),
            engine=EngineDescription(engine_version="shoal-sim"),
        )
        await self.append(NodeJoined(node_id=node_id, spec=NodeSpec(role=role, labels={}), description=description,
                                     addr=addr))
        return node_id

    async def run_service(self, service_id: str, node_ids: list[str]) -> list[str]:
        """Create, assign and start a task for every slot of the service that has none yet."""
        await self.catch_up()
        svc = self.projection.state.services[service_id]
        tasks = [self._task(svc, slot) for slot in self._empty_slots(svc)]
        placed = list(zip(tasks, cycle(node_ids), strict=False))
        if placed:
            await self.append(*(TaskCreated(task=t) for t, _ in placed),
                              *(TaskAssigned(task=t, node_id=n) for t, n in placed))
            await self.append(*(TaskStatusChanged(task_id=t.id, status=TaskStatus(state=TaskState.RUNNING,
                                                                                  message="started"))
                                for t, _ in placed))
        return [t.id for t in tasks]

    async def fail(self, task_id: str, err: str) -> None:
        """The task's container died; the slot is then empty again for `run_service` to refill."""
        await self.append(TaskStatusChanged(task_id=task_id, status=TaskStatus(state=TaskState.FAILED, err=err,
                                                                                message="started")),
                          TaskDesiredStateChanged(task_id=task_id, desired_state=TaskState.SHUTDOWN))

    def _empty_slots(self, svc: Service) -> list[int]:
        replicated = svc.spec.mode.replicated if svc.spec.mode is not None else None
        replicas = (replicated.replicas or 0) if replicated is not None else 0
        live = {t.slot for t in self.projection.state.tasks_of_service(svc.id) if t.desired_state is TaskState.RUNNING}
        return [slot for slot in range(1, replicas + 1) if slot not in live]

    @staticmethod
    def _task(svc: Service, slot: int) -> Task:
        assert svc.spec.task_template is not None
        return Task(id=new_id(), service_id=svc.id, service_name=svc.spec.name, slot=slot,
                    spec=svc.spec.task_template, spec_version=svc.spec_version, desired_state=TaskState.RUNNING)
