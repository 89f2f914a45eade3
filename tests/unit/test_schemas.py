"""The schemas speak Docker's wire format: real bodies captured from the docker CLI and dockerd decode,
and specs round-trip exactly (what a client sent is what it reads back)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from schemas.codec import decode, encode
from schemas.events import Envelope, ServiceCreated, TaskStatusChanged
from schemas.node import Node
from schemas.service import Service, ServiceSpec
from schemas.task import RANK, Task, TaskState, TaskStatus, can_move, is_terminal

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared/reference/docker-cli-examples.json"
if not REFERENCE.is_file():
    raise FileNotFoundError(f"{REFERENCE} is missing: these tests decode the docker CLI's bodies recorded in the "
                            "project's shared reference, which must sit beside the checkout (../shared)")
EXAMPLES = json.loads(REFERENCE.read_text())


def _bodies(kind: str) -> list[Any]:
    return [ex[kind]["body"] for ex in EXAMPLES.values() if isinstance(ex.get(kind, {}).get("body"), (dict, list))]


@pytest.mark.parametrize("name", [k for k in EXAMPLES if k.startswith("service_create")])
def test_service_spec_from_the_cli_round_trips_exactly(name: str) -> None:
    body = EXAMPLES[name]["request"]["body"]
    spec = msgspec.json.decode(json.dumps(body), type=ServiceSpec)
    assert json.loads(msgspec.json.encode(spec)) == body


def test_service_spec_durations_and_acronyms_use_docker_names() -> None:
    body = EXAMPLES["service_create_many_flags"]["request"]["body"]
    spec = msgspec.json.decode(json.dumps(body), type=ServiceSpec)
    assert spec.task_template is not None and spec.task_template.resources is not None
    assert spec.task_template.resources.limits is not None
    assert spec.task_template.resources.limits.nano_cpus == 500_000_000
    assert spec.update_config is not None and spec.update_config.delay == 1_000_000_000


@pytest.mark.parametrize("name", ["service_list_status", "service_inspect_defaults", "service_get_updating",
                                  "service_get_rollback_completed"])
def test_dockerd_service_bodies_decode(name: str) -> None:
    body = EXAMPLES[name]["response"]["body"]
    services = msgspec.json.decode(json.dumps(body if isinstance(body, list) else [body]), type=list[Service])
    assert all(s.id and s.spec.name for s in services)


@pytest.mark.parametrize("name", ["tasks_for_service", "tasks_progress_poll", "tasks_rejected_missing_image"])
def test_dockerd_task_bodies_decode(name: str) -> None:
    tasks = msgspec.json.decode(json.dumps(EXAMPLES[name]["response"]["body"]), type=list[Task])
    assert tasks and all(t.service_id and t.status.state in RANK for t in tasks)


def test_dockerd_node_bodies_decode_with_acronym_fields() -> None:
    nodes = msgspec.json.decode(json.dumps(EXAMPLES["nodes_list"]["response"]["body"]), type=list[Node])
    assert nodes[0].description.resources.nano_cpus == 2_000_000_000
    assert nodes[0].manager_status is not None and nodes[0].manager_status.leader


def test_returned_objects_always_carry_the_fields_go_clients_dereference() -> None:
    wire = json.loads(msgspec.json.encode(Task(id="t")))
    assert wire["DesiredState"] == "running"
    assert wire["Status"]["State"] == "new"
    assert wire["Version"] == {"Index": 0}


def test_task_states_follow_swarm_order_and_values() -> None:
    order = [TaskState.NEW, TaskState.PENDING, TaskState.ASSIGNED, TaskState.ACCEPTED, TaskState.PREPARING,
             TaskState.READY, TaskState.STARTING, TaskState.RUNNING, TaskState.COMPLETE, TaskState.SHUTDOWN,
             TaskState.FAILED, TaskState.REJECTED, TaskState.REMOVE, TaskState.ORPHANED]
    assert [RANK[s] for s in order] == sorted(RANK[s] for s in order)
    assert RANK[TaskState.RUNNING] == 512 and RANK[TaskState.ORPHANED] == 832


@pytest.mark.parametrize(("current", "proposed", "allowed"), [
    (TaskState.ASSIGNED, TaskState.RUNNING, True),
    (TaskState.RUNNING, TaskState.RUNNING, True),
    (TaskState.RUNNING, TaskState.STARTING, False),
    (TaskState.FAILED, TaskState.RUNNING, False),
    (TaskState.COMPLETE, TaskState.SHUTDOWN, True),
])
def test_monotonic_transition_rule(current: TaskState, proposed: TaskState, allowed: bool) -> None:
    assert can_move(current, proposed) is allowed


def test_terminal_states_are_those_after_running() -> None:
    assert not is_terminal(TaskState.RUNNING)
    assert all(is_terminal(s) for s in (TaskState.COMPLETE, TaskState.FAILED, TaskState.REJECTED,
                                        TaskState.SHUTDOWN, TaskState.ORPHANED))


def test_envelope_round_trip_keeps_the_event_type() -> None:
    env = Envelope(id="1", time="2026-01-01T00:00:00.000000000Z", actor="api",
                   event=TaskStatusChanged(task_id="t", status=TaskStatus(state=TaskState.RUNNING)))
    assert decode(encode(env)) == env
    created = Envelope(id="2", time="x", actor="api", event=ServiceCreated(service_id="s", spec=ServiceSpec(name="w")))
    assert json.loads(encode(created))["Event"]["Type"] == "ServiceCreated"


@pytest.mark.parametrize(
    "data", [b"", b"{", b'{"ID":"1"}', b'{"ID":"1","Time":"t","Actor":"a","Event":{"Type":"Nope"}}']
)
def test_corrupt_or_unknown_entries_raise_decode_errors(data: bytes) -> None:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        decode(data)
