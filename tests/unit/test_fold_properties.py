"""Properties of the fold over arbitrary event sequences: it never raises, corrupt entries are
skipped, and starting from a snapshot then folding the tail equals replaying everything."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import decode, encode
from schemas.events import (
    AnyEvent,
    NodeJoined,
    NodeRemoved,
    NodeStatusChanged,
    NodeUpdated,
    ServiceCreated,
    ServiceRemoved,
    ServiceUpdated,
    TaskAssigned,
    TaskCreated,
    TaskDesiredStateChanged,
    TaskPending,
    TaskRemoved,
    TaskStatusChanged,
)
from schemas.node import NodeDescription, NodeSpec
from schemas.service import ContainerSpec, ServiceSpec, TaskSpec
from schemas.task import RANK, Task, TaskState, TaskStatus
from services.kernel import snapshot
from services.kernel.fold import apply_raw
from services.kernel.state import ClusterState
from tests.events import envelope

ids = st.sampled_from(["a", "b", "c"])


def _spec(image: str) -> TaskSpec:
    return TaskSpec(container_spec=ContainerSpec(image=image, command=["sleep", "1"]))


states = st.sampled_from(list(TaskState))
names = st.sampled_from(["web", "db", "cache"])

events: st.SearchStrategy[AnyEvent] = st.one_of(
    st.builds(lambda s, n: ServiceCreated(service_id=s, spec=ServiceSpec(name=n)), ids, names),
    st.builds(lambda s, n: ServiceUpdated(service_id=s, spec=ServiceSpec(name=n)), ids, names),
    st.builds(lambda s: ServiceRemoved(service_id=s), ids),
    st.builds(lambda n: NodeJoined(node_id=n, spec=NodeSpec(), description=NodeDescription()), ids),
    st.builds(lambda n, a: NodeUpdated(node_id=n, spec=NodeSpec(availability=a)), ids,
              st.sampled_from(["active", "pause", "drain"])),
    st.builds(lambda n, s: NodeStatusChanged(node_id=n, state=s), ids, st.sampled_from(["ready", "down"])),
    st.builds(lambda n: NodeRemoved(node_id=n), ids),
    st.builds(lambda t, s, slot, n, image: TaskCreated(task=Task(id=t, service_id=s, slot=slot, node_id=n,
                                                                  spec=_spec(image))),
              ids, ids, st.integers(0, 3), st.sampled_from(["", "a", "b"]), st.sampled_from(["v1", "v2"])),
    st.builds(lambda t, n: TaskAssigned(task=Task(id=t, service_id="a", slot=1), node_id=n), ids, ids),
    st.builds(lambda t: TaskPending(task_id=t, err="no suitable node"), ids),
    st.builds(lambda t, s: TaskDesiredStateChanged(task_id=t, desired_state=s), ids, states),
    st.builds(lambda t, s: TaskStatusChanged(task_id=t, status=TaskStatus(state=s)), ids, states),
    st.builds(lambda t: TaskRemoved(task_id=t), ids),
)
entries = st.lists(st.one_of(events.map(lambda e: encode(envelope(e))), st.binary(max_size=20)), max_size=60)


def _replay(data: list[bytes], state: ClusterState | None = None, start: int = 0) -> ClusterState:
    state = state or ClusterState()
    for i, raw in enumerate(data[start:], start=start + 1):
        apply_raw(state, i, raw)
    return state


@settings(max_examples=300, deadline=None)
@given(entries)
def test_any_sequence_folds_without_raising_and_counts_every_entry(data: list[bytes]) -> None:
    state = _replay(data)
    counted = sum(state.stats.applied.values()) + sum(state.stats.ignored.values()) + state.stats.skipped
    assert counted == len(data) and state.seq == len(data)


@settings(max_examples=300, deadline=None)
@given(entries, st.integers(min_value=0, max_value=60))
def test_snapshot_plus_tail_equals_full_replay(data: list[bytes], cut: int) -> None:
    cut = min(cut, len(data))
    head = snapshot.restore(snapshot.take(_replay(data[:cut])))
    assert snapshot.take(_replay(data, head, cut)) == snapshot.take(_replay(data))
    full = _replay(data)
    resumed = _replay(data, snapshot.restore(snapshot.take(_replay(data[:cut]))), cut)
    assert resumed.tasks_by_service == full.tasks_by_service
    assert resumed.tasks_by_node == full.tasks_by_node


@settings(max_examples=200, deadline=None)
@given(entries)
def test_task_state_never_moves_backwards(data: list[bytes]) -> None:
    state = ClusterState()
    seen: dict[str, int] = {}
    for i, raw in enumerate(data, start=1):
        apply_raw(state, i, raw)
        for tid, task in state.tasks.items():
            rank = RANK[task.status.state]
            assert rank >= seen.get(tid, -1) or tid not in seen
            seen[tid] = rank
        for tid in set(seen) - set(state.tasks):
            del seen[tid]


def _counted_afresh(state: ClusterState) -> tuple[dict[tuple[str, str], int], dict[str, list[int]]]:
    tally = Counter((t.status.state.value, t.desired_state.value) for t in state.tasks.values())
    per_service = {sid: [0, 0] for sid in {t.service_id for t in state.tasks.values()}}
    for t in state.tasks.values():
        if t.desired_state == TaskState.RUNNING:
            per_service[t.service_id][0] += 1
            per_service[t.service_id][1] += t.status.state == TaskState.RUNNING
    return dict(tally), per_service


@settings(max_examples=300, deadline=None)
@given(entries, st.integers(min_value=0, max_value=60))
def test_the_kept_task_tallies_equal_a_fresh_count_after_every_entry(data: list[bytes], cut: int) -> None:
    """What `/metrics` reports without walking the tasks, also after a snapshot restore."""
    state = snapshot.restore(snapshot.take(_replay(data[:cut])))
    for i, raw in enumerate(data[cut:], start=min(cut, len(data)) + 1):
        apply_raw(state, i, raw)
        tally = {(o, d): n for o, row in state.task_tally.items() for d, n in row.items() if n}
        kept = tally, state.service_tasks_running
        assert kept == _counted_afresh(state)


@settings(max_examples=300, deadline=None)
@given(entries, st.integers(min_value=0, max_value=60))
def test_a_task_keeps_the_spec_it_came_with_and_shares_its_services_when_equal(data: list[bytes], cut: int) -> None:
    """A new task holds its service's last spec object when equal (`ClusterState.task_specs`), and
    never a spec that differs from what its event carried, also after a snapshot restore."""
    state = snapshot.restore(snapshot.take(_replay(data[:cut])))
    came_with = {tid: t.spec for tid, t in state.tasks.items()}
    for i, raw in enumerate(data[cut:], start=min(cut, len(data)) + 1):
        known, last = set(state.tasks), dict(state.task_specs)
        apply_raw(state, i, raw)
        for tid in set(state.tasks) - known:
            event = decode(raw).event
            assert isinstance(event, TaskCreated | TaskAssigned)
            came_with[tid] = event.task.spec
            task = state.tasks[tid]
            assert task.spec is state.task_specs[task.service_id]
            shared = last.get(task.service_id)
            assert task.spec is shared or shared != event.task.spec
        for tid, task in state.tasks.items():
            assert task.spec == came_with[tid]
        assert set(state.task_specs) == {t.service_id for t in state.tasks.values()}
