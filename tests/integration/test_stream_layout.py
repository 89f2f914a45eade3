"""A stream an earlier Shoal wrote tasks into (under `task.<node>.<task>`, or `task.<task>.<node>`) is
refused at start: those tasks' entries lie outside the compare-and-set scopes and the agents' filters
of this layout (`subjects.task_all`, `subjects.node_tasks`), so writes on them would conflict forever
and their agents would never see them."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from services.kernel import snapshot, subjects
from services.kernel.eventlog import Append
from services.kernel.jetstream import (
    LAYOUT_KEY,
    JetStreamLog,
    OldSubjectLayout,
    SubjectsTaken,
    check_stream,
    connect,
    ensure_stream,
)
from services.kernel.snapshot import ObjectStoreSnapshots
from services.kernel.state import ClusterState
from tests.nats_server import NatsServer
from tests.streams import earlier_stream


@pytest.mark.parametrize(("layout", "written"), [
    (None, ("shoal.evt.task._.t1.desired", "shoal.evt.task.n1.t1.placement")),
    ("task-first", ("shoal.evt.task.t1._.desired", "shoal.evt.task.t1.n1.placement")),
])
async def test_a_stream_holding_tasks_of_an_earlier_layout_is_refused(
        nats: NatsServer, layout: str | None, written: tuple[str, ...]) -> None:
    await earlier_stream(nats.url, subjects.CLUSTER, *written, layout=layout)
    nc = await connect([nats.url], "test")
    with pytest.raises(OldSubjectLayout, match="stream SHOAL holds task entries in an earlier subject layout"):
        await ensure_stream(nc, "SHOAL")
    await nc.close()


async def test_an_earlier_stream_without_tasks_is_taken_over(nats: NatsServer) -> None:
    await earlier_stream(nats.url, subjects.CLUSTER, subjects.node("n1", "agent"))
    nc = await connect([nats.url], "test")
    await ensure_stream(nc, "SHOAL")
    await JetStreamLog(nc, "SHOAL").append([Append(subjects.task("", "t1", "desired"), b"{}", "t")])
    await ensure_stream(nc, "SHOAL")  # marked as ours: its tasks are in our layout from now on
    info = await nc.jetstream().stream_info("SHOAL")
    await nc.close()
    assert (info.config.metadata or {})[LAYOUT_KEY] == subjects.LAYOUT


async def test_a_process_refuses_to_start_on_it_and_says_what_to_do(nats: NatsServer) -> None:
    await earlier_stream(nats.url, "shoal.evt.task.n1.t1.desired")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.scheduler", "--nats", nats.url, stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert b"earlier subject layout" in err and b"remove this stream and its snapshots" in err
    assert b"Traceback" not in err  # the message is the whole story


async def test_a_process_given_a_second_stream_on_the_server_is_refused_and_told_which_holds_the_log(
        nats: NatsServer) -> None:
    """Streams' subjects may not overlap and every Shoal stream holds `shoal.evt.>`: a process given
    another stream name stops with a message naming the stream that holds the log, instead of retrying
    a creation the server refuses for ever."""
    nc = await connect([nats.url], "first")
    await ensure_stream(nc, "SHOAL")
    with pytest.raises(SubjectsTaken, match="stream SHOAL on this NATS server already holds"):
        await check_stream(nc, "SHOAL2")  # what `shoal up` asks before it says the cluster is up
    await nc.close()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.scheduler", "--nats", nats.url, "--stream", "SHOAL2",
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert b"cannot create stream SHOAL2: stream SHOAL on this NATS server" in err
    assert b"--stream SHOAL / SHOAL_STREAM=SHOAL" in err and b"Traceback" not in err


async def test_a_cluster_started_on_a_new_stream_does_not_resume_from_the_old_streams_snapshots(
        nats: NatsServer) -> None:
    """A cluster recreated on another stream name (the old stream removed, its snapshots left in
    their bucket) starts at sequence 1, so the old cluster's snapshots (at sequence 500 here) must not
    be loaded by its processes, or they would follow from 501 on."""
    nc = await connect([nats.url], "earlier")
    old = ClusterState()
    old.seq = 500
    await ObjectStoreSnapshots(nc.jetstream(), "SHOAL").save("scheduler", snapshot.take(old))
    await nc.close()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.scheduler", "--nats", nats.url, "--stream", "SHOAL2",
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            while b"standing by" not in (line := await proc.stderr.readline()):
                assert line, "the scheduler exited before standing by"
    finally:
        proc.terminate()
        await proc.wait()
    assert json.loads(line)["seq"] == 0
