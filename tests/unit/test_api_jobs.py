"""What the API shows for jobs: `JobStatus` on the service, and `ServiceStatus` counting the current run."""

from __future__ import annotations

import msgspec

from schemas.base import Version
from schemas.events import ServiceCreated, ServiceUpdated, TaskCreated, TaskStatusChanged
from schemas.service import ContainerSpec, ReplicatedJob, ServiceMode, ServiceSpec, TaskSpec
from schemas.task import Task, TaskState, TaskStatus
from services.api.views import service_status, service_view
from tests.events import fold

SPEC = ServiceSpec(name="batch", task_template=TaskSpec(container_spec=ContainerSpec(image="busybox")),
                   mode=ServiceMode(replicated_job=ReplicatedJob(max_concurrent=2, total_completions=3)))


def test_completed_tasks_count_only_the_current_iteration_of_a_job() -> None:
    state = fold([ServiceCreated(service_id="b", spec=SPEC),
                  TaskCreated(task=Task(id="t0", service_id="b", slot=0, desired_state=TaskState.COMPLETE,
                                        job_iteration=Version(0))),
                  TaskStatusChanged(task_id="t0", status=TaskStatus(state=TaskState.COMPLETE))])
    assert service_status(state, state.services["b"]).completed_tasks == 1
    fold([ServiceUpdated(service_id="b", spec=SPEC)], state)
    status = service_status(state, state.services["b"])
    assert (status.completed_tasks, status.desired_tasks) == (0, 2)


def test_a_job_service_shows_its_job_status_on_the_wire() -> None:
    state = fold([ServiceCreated(service_id="b", spec=SPEC), ServiceUpdated(service_id="b", spec=SPEC)])
    wire = msgspec.to_builtins(service_view(state.services["b"]))
    assert wire["JobStatus"]["JobIteration"] == {"Index": 1} and wire["JobStatus"]["LastExecution"]
