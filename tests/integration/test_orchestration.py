"""Swarm's orchestration behaviours end to end through real components: the orchestrator and the
scheduler loops, real agents driving the `sim` executor, a real nats-server in between
(swarm-behaviour sections 2, 3 and 6). Each test drives the cluster by appending events as the API
would, and asserts on the event log and on a projection of it. Delays are short so each test takes
a few seconds; every wait has a generous deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec
import pytest

from schemas.events import (
    Envelope,
    NodeUpdated,
    ServiceCreated,
    ServiceUpdated,
    TaskCreated,
    TaskDesiredStateChanged,
    TaskStatusChanged,
)
from schemas.node import NodeSpec
from schemas.service import (
    ContainerSpec,
    GlobalService,
    ReplicatedService,
    ResourceReservations,
    Resources,
    RestartPolicy,
    ServiceMode,
    ServiceSpec,
    TaskSpec,
    UpdateConfig,
)
from schemas.task import RANK, Task, TaskState
from services.agent.executor import Phase
from services.kernel.ids import parse_ns
from services.kernel.jetstream import JetStreamLog
from services.orchestrator.decide import Settings
from services.orchestrator.pacing import unplaced
from tests.integration.simcluster import SimCluster, sim_cluster

pytestmark = pytest.mark.integration

MS = 1_000_000
RESTART_DELAY = 300 * MS
FAILS = ("SHOAL_SIM_EXIT=1",)
"""A sim task with this environment exits with code 1 as soon as it has started."""


def spec(image: str = "app:1", replicas: int = 1, *, env: Sequence[str] = (), global_: bool = False,
         update: UpdateConfig | None = None, name: str = "web") -> ServiceSpec:
    mode = ServiceMode(global_=GlobalService()) if global_ else ServiceMode(replicated=ReplicatedService(replicas))
    template = TaskSpec(container_spec=ContainerSpec(image=image, env=list(env) or None),
                        restart_policy=RestartPolicy(delay=RESTART_DELAY))
    return ServiceSpec(name=name, mode=mode, task_template=template, update_config=update, rollback_config=update)


def image(task: Task) -> str:
    return task.spec.container_spec.image if task.spec.container_spec else ""


def update_status(c: SimCluster, service_id: str = "web") -> tuple[str, str]:
    status = c.state.services[service_id].update_status
    return ("", "") if status is None else (status.state, status.message)


def runs_on(c: SimCluster, service_id: str, node_id: str) -> Callable[[], bool]:
    return lambda: node_id in {t.node_id for t in c.running(service_id)}


def at_ns(env: Envelope) -> int:
    return parse_ns(env.time)


async def test_a_failed_task_is_restarted_in_its_slot_after_the_restart_delay(jslog: JetStreamLog) -> None:
    async with sim_cluster(jslog, "n1", "n2") as c:
        await c.append(ServiceCreated(service_id="web", spec=spec(replicas=3)))
        await c.until("3 running", lambda: len(c.running("web")) == 3)
        victim = next(t for t in c.running("web") if t.slot == 2)

        c.fail(victim.id)
        await c.until("slot 2 running again", lambda: len(c.running("web")) == 3
                      and victim.id not in {t.id for t in c.running("web")})
        replacement = next(t for t in c.running("web") if t.slot == 2)
        assert c.state.tasks[victim.id].status.state == TaskState.FAILED
        assert c.state.tasks[victim.id].status.err == "task: non-zero exit (1)"
        assert c.state.tasks[victim.id].desired_state == TaskState.SHUTDOWN

        created = next(ev for _, ev in c.of(TaskCreated) if ev.task.id == replacement.id)
        assert created.task.desired_state == TaskState.READY  # created ready, started after the delay
        failed_at = next(at_ns(env) for env, ev in c.of(TaskStatusChanged)
                         if ev.task_id == victim.id and ev.status.state == TaskState.FAILED)
        started_at = next(at_ns(env) for env, ev in c.of(TaskDesiredStateChanged)
                          if ev.task_id == replacement.id and ev.desired_state == TaskState.RUNNING)
        assert started_at - failed_at >= RESTART_DELAY
        assert sorted(t.slot for t in c.running("web")) == [1, 2, 3]


async def test_a_rolling_update_replaces_two_slots_at_a_time_until_all_run_the_new_spec(jslog: JetStreamLog) -> None:
    async with sim_cluster(jslog, "n1", "n2", "n3") as c:
        config = UpdateConfig(parallelism=2, monitor=300 * MS)
        await c.append(ServiceCreated(service_id="web", spec=spec(replicas=10, update=config)))
        await c.until("10 running", lambda: len(c.running("web")) == 10)

        in_flight: list[int] = []

        def replacing(seq: int, env: msgspec.Struct) -> None:
            """Slots whose new task does not run yet, or whose old task has not stopped yet."""
            busy = {t.slot for t in c.tasks("web") if
                    (image(t) == "app:2" and RANK[t.desired_state] <= RANK[TaskState.RUNNING]
                     and t.status.state != TaskState.RUNNING)
                    or (image(t) == "app:1" and RANK[t.desired_state] > RANK[TaskState.RUNNING]
                        and RANK[t.status.state] <= RANK[TaskState.RUNNING])}
            in_flight.append(len(busy))

        c.observer.listeners.append(replacing)
        await c.append(ServiceUpdated(service_id="web", spec=spec("app:2", replicas=10, update=config)))
        await c.until("the update completed", lambda: update_status(c) == ("completed", "update completed"))

        assert max(in_flight) == 2, in_flight
        assert len(c.running("web")) == 10 and {image(t) for t in c.running("web")} == {"app:2"}
        assert sorted(t.slot for t in c.running("web")) == list(range(1, 11))
        assert all(t.status.state == TaskState.SHUTDOWN for t in c.tasks("web") if image(t) == "app:1")
        assert c.update_states("web") == [("updating", "update in progress"), ("completed", "update completed")]


async def test_a_failing_update_pauses_and_a_user_update_resumes_it(jslog: JetStreamLog) -> None:
    async with sim_cluster(jslog, "n1", "n2") as c:
        config = UpdateConfig(parallelism=1, monitor=300 * MS)
        await c.append(ServiceCreated(service_id="web", spec=spec(replicas=4, update=config)))
        await c.until("4 running", lambda: len(c.running("web")) == 4)

        await c.append(ServiceUpdated(service_id="web", spec=spec("app:2", replicas=4, env=FAILS, update=config)))
        await c.until("paused", lambda: update_status(c)[0] == "paused")
        state, message = update_status(c)
        culprit = message.rpartition(" ")[2]
        assert message == f"update paused due to failure or early termination of task {culprit}"
        assert image(c.state.tasks[culprit]) == "app:2"
        assert c.state.tasks[culprit].status.state == TaskState.FAILED
        # The update moved on once a new task ran (Delay 0), and stopped where the failure was seen:
        # restarts of the failed tasks fail again, but no further slot is replaced.
        await c.until("restarts failed too", lambda: sum(
            image(t) == "app:2" and t.status.state == TaskState.FAILED for t in c.tasks("web")) >= 3)
        assert update_status(c) == (state, message)
        touched = {t.slot for t in c.tasks("web") if image(t) == "app:2"}
        assert len(touched) <= 2 and [image(t) for t in c.running("web")] == ["app:1"] * (4 - len(touched))

        await c.append(ServiceUpdated(service_id="web", spec=spec("app:3", replicas=4, update=config)))
        await c.until("completed on the fixed spec", lambda: update_status(c) == ("completed", "update completed"))
        assert c.update_states("web") == [("updating", "update in progress"), (state, message),
                                          ("updating", "update in progress"), ("completed", "update completed")]
        assert [image(t) for t in c.running("web")] == ["app:3"] * 4


async def test_a_failing_update_with_failure_action_rollback_rolls_back(jslog: JetStreamLog) -> None:
    async with sim_cluster(jslog, "n1", "n2") as c:
        config = UpdateConfig(parallelism=2, monitor=300 * MS, failure_action="rollback")
        await c.append(ServiceCreated(service_id="web", spec=spec(replicas=4, update=config)))
        await c.until("4 running", lambda: len(c.running("web")) == 4)

        await c.append(ServiceUpdated(service_id="web", spec=spec("app:2", replicas=4, env=FAILS, update=config)))
        await c.until("rolled back", lambda: update_status(c)[0] == "rollback_completed")

        rollback = next(ev for _, ev in c.of(ServiceUpdated) if ev.rollback)
        assert rollback.failed_task and image(c.state.tasks[rollback.failed_task]) == "app:2"
        rolled_back = f"update rolled back due to failure or early termination of task {rollback.failed_task}"
        assert c.update_states("web") == [("updating", "update in progress"), ("rollback_started", rolled_back),
                                          ("rollback_completed", "rollback completed")]
        service = c.state.services["web"]
        assert service.spec == spec(replicas=4, update=config) and service.previous_spec is None
        assert [image(t) for t in c.running("web")] == ["app:1"] * 4


async def test_a_drained_node_s_tasks_stop_and_are_replaced_elsewhere(jslog: JetStreamLog) -> None:
    async with sim_cluster(jslog, "n1", "n2", "n3") as c:
        await c.append(ServiceCreated(service_id="web", spec=spec(replicas=6)))
        await c.until("6 running on every node", lambda: len(c.running("web")) == 6
                      and {t.node_id for t in c.running("web")} == {"n1", "n2", "n3"})
        on_n1 = [t for t in c.running("web") if t.node_id == "n1"]

        await c.append(NodeUpdated(node_id="n1", spec=NodeSpec(availability="drain")))
        await c.until("6 running off n1", lambda: len(c.running("web")) == 6
                      and "n1" not in {t.node_id for t in c.running("web")})
        assert all(c.state.tasks[o.id].desired_state == TaskState.SHUTDOWN for o in on_n1)
        await c.until("n1's tasks stopped", lambda: all(
            c.state.tasks[o.id].status.state == TaskState.SHUTDOWN for o in on_n1))
        assert sorted(t.slot for t in c.running("web")) == [1, 2, 3, 4, 5, 6]


async def test_a_silent_node_s_tasks_are_replaced_and_stopped_when_it_comes_back(jslog: JetStreamLog) -> None:
    async with sim_cluster(jslog, "n1", "n2", "n3") as c:
        await c.append(ServiceCreated(service_id="web", spec=spec(replicas=6)))
        await c.until("6 running on every node", lambda: len(c.running("web")) == 6
                      and {t.node_id for t in c.running("web")} == {"n1", "n2", "n3"})
        stale = [t for t in c.running("web") if t.node_id == "n3"]

        await c.stop_agent("n3")
        await c.until("n3 down", lambda: c.state.nodes["n3"].status.state == "down")
        assert c.state.nodes["n3"].status.message == "heartbeat failure"
        await c.until("6 running off n3", lambda: len(c.running("web")) == 6
                      and "n3" not in {t.node_id for t in c.running("web")})
        for old in stale:  # told to stop, still running as far as anyone knows
            task = c.state.tasks[old.id]
            assert (task.desired_state, task.status.state) == (TaskState.SHUTDOWN, TaskState.RUNNING)

        await c.start_agent("n3")
        await c.until("the stale tasks stopped", lambda: all(
            c.state.tasks[o.id].status.state == TaskState.SHUTDOWN for o in stale))
        observed = [t.slot for t in c.tasks("web") if t.status.state == TaskState.RUNNING]
        assert sorted(observed) == [1, 2, 3, 4, 5, 6]  # no slot ends with two running tasks
        world = c.nodes["n3"].world.tasks
        assert all(world[o.id].container.phase is Phase.EXITED for o in stale)  # really stopped on n3


async def test_a_global_service_follows_nodes_joining_and_draining(jslog: JetStreamLog) -> None:
    async with sim_cluster(jslog) as c:
        await c.append(ServiceCreated(service_id="mon", spec=spec(global_=True, name="mon")))
        for node_id in ("n1", "n2", "n3"):
            await c.start_agent(node_id)
            await c.until(f"a task on {node_id}", runs_on(c, "mon", node_id))
            assert len(c.running("mon")) == len(c.nodes)
        assert sorted(t.node_id for t in c.running("mon")) == ["n1", "n2", "n3"]
        assert {t.slot for t in c.tasks("mon")} == {0}

        on_n2 = next(t for t in c.running("mon") if t.node_id == "n2")
        await c.append(NodeUpdated(node_id="n2", spec=NodeSpec(availability="drain")))
        await c.until("n2's task stopped", lambda: c.state.tasks[on_n2.id].status.state == TaskState.SHUTDOWN)
        await c.until("nothing replaces it", lambda: sorted(t.node_id for t in c.running("mon")) == ["n1", "n3"])
        assert [t.id for t in c.tasks("mon") if t.node_id == "n2"] == [on_n2.id]
        assert len(c.tasks("mon")) == 3


async def test_services_larger_than_the_unplaced_limit_are_created_as_the_scheduler_keeps_up(
        jslog: JetStreamLog) -> None:
    seen: list[int] = []
    async with sim_cluster(jslog, "n1", "n2", settings=Settings(unplaced_limit=3)) as c:
        await c.append(ServiceCreated(service_id="web", spec=spec(replicas=12)),
                       ServiceCreated(service_id="api", spec=spec(replicas=4, name="api")))
        await c.until("16 running", lambda: len(c.running("web")) + len(c.running("api")) == 16,
                      watch=lambda: seen.append(unplaced(c.state)))
    assert max(seen) <= 3, "more tasks waited for the scheduler than the limit allows"
    assert max(seen) == 3, "the limit was never reached, so this test proved nothing"
    assert len(c.of(TaskCreated)) == 16


async def test_tasks_no_node_can_take_do_not_hold_back_the_rest_of_their_service(jslog: JetStreamLog) -> None:
    huge = spec(replicas=8, name="huge")
    assert huge.task_template is not None
    huge.task_template.resources = Resources(reservations=ResourceReservations(memory_bytes=500 << 30))
    async with sim_cluster(jslog, "n1", settings=Settings(unplaced_limit=3)) as c:
        await c.append(ServiceCreated(service_id="huge", spec=huge))
        await c.until("8 tasks pending", lambda: len(c.tasks("huge")) == 8
                      and all(t.status.state == TaskState.PENDING for t in c.tasks("huge")))
        assert {t.status.err for t in c.tasks("huge")} == {"no suitable node (insufficient resources on 1 node)"}
