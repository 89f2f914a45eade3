"""The pure parts of task logs: Docker's framing, the api's line format and parameters, the process
executor's stamped files, the docker executor's engine query."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

from schemas.logs import STDERR, STDOUT, LogLine, LogQuery
from schemas.task import Task, TaskState, TaskStatus
from services.agent.executors import docker_logs, logfiles
from services.api.errors import InvalidParameter
from services.api.log_stream import Format, frames, incomplete, query_of, with_logs
from services.kernel import stdcopy

T0 = 1_795_000_000_123_456_789


def test_stdcopy_frames_split_back_and_keep_the_incomplete_rest() -> None:
    data = stdcopy.frame(STDOUT, b"out\n") + stdcopy.frame(STDERR, b"") + stdcopy.frame(STDERR, b"err\n")
    assert data[:8] == b"\x01\x00\x00\x00\x00\x00\x00\x04"
    for cut in range(len(data)):
        head, rest = stdcopy.split(data[:cut])
        tail, left = stdcopy.split(rest + data[cut:])
        assert head + tail == [(STDOUT, b"out\n"), (STDERR, b""), (STDERR, b"err\n")] and left == b""


def test_frames_carry_timestamp_then_details_then_the_line() -> None:
    task = Task(id="t1", node_id="n1", service_id="s1")
    batch = [LogLine(stream=STDOUT, time=T0, data=b"hello\n"), LogLine(stream=STDERR, time=T0, data=b"no newline")]
    got, _ = stdcopy.split(frames(task, batch, Format(timestamps=True, details=True)))
    details = b"com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t1"
    assert got == [(STDOUT, b"2026-11-18T11:06:40.123456789Z " + details + b" hello\n"),
                   (STDERR, b"2026-11-18T11:06:40.123456789Z " + details + b" no newline\n")]
    assert stdcopy.split(frames(task, batch[:1], Format(timestamps=False, details=False)))[0] == [(STDOUT, b"hello\n")]


def test_the_final_error_frame_is_swarmkits_warning() -> None:
    [(stream, payload)], _ = stdcopy.split(incomplete(["node a is not available", "node b is not available"]))
    assert stream == stdcopy.SYSTEMERR
    assert payload == (b"Error grabbing logs: warning: incomplete log stream. some logs could not be retrieved for "
                       b"the following reasons: node a is not available, node b is not available\n")


@pytest.mark.parametrize(("qs", "expected"), [
    ("stdout=1&stderr=1&tail=all", LogQuery()),
    ("stdout=1&tail=3&follow=1", LogQuery(tail=3, follow=True, stderr=False)),
    ("stderr=true&tail=%C2%B2&since=1795000000.5", LogQuery(stdout=False, since=1_795_000_000_500_000_000)),
    ("stdout=1&until=2026-11-18T11:06:40.123456789Z", LogQuery(stderr=False, until=T0)),
])
def test_query_parameters_as_dockerd_reads_them(qs: str, expected: LogQuery) -> None:
    assert query_of(make_mocked_request("GET", f"/services/x/logs?{qs}")) == expected


@pytest.mark.parametrize(("qs", "message"), [
    ("tail=all", "you must choose at least one stream"),
    ("stdout=1&since=%C2%B2", "invalid value for since"),
])
def test_bad_parameters_are_400s(qs: str, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        query_of(make_mocked_request("GET", f"/services/x/logs?{qs}"))


def test_only_tasks_an_agent_took_on_have_logs() -> None:
    def task(i: str, state: TaskState, node: str = "n") -> Task:
        return Task(id=i, node_id=node, created_at=i, status=TaskStatus(state=state))

    tasks = [task("3", TaskState.RUNNING), task("1", TaskState.FAILED), task("2", TaskState.PENDING, ""),
             task("4", TaskState.ASSIGNED), task("5", TaskState.REJECTED), task("6", TaskState.PREPARING)]
    assert [t.id for t in with_logs(tasks)] == ["1", "3", "6"]


async def lines_of(task_dir: Path, **query: object) -> list[LogLine]:
    out: list[LogLine] = []
    async for batch in logfiles.read(task_dir, LogQuery(**query)):  # type: ignore[arg-type]
        out += batch
    return out


async def test_files_tail_across_blocks_and_cut_very_long_lines(tmp_path: Path) -> None:
    many = b"".join(b"line %d %s\n" % (i, b"x" * 100) for i in range(2000))
    (tmp_path / "stdout.log").write_bytes(many + b"y" * (logfiles.BLOCK + 10) + b"\n")
    (tmp_path / "exit").write_text("0\n")
    lines = await lines_of(tmp_path)
    assert len(lines) == 2002 and len(lines[-2].data) == logfiles.BLOCK and lines[-1].data == b"y" * 10 + b"\n"
    last_three = [lines[-3].data, b"y" * logfiles.BLOCK, b"y" * 10 + b"\n"]
    assert [x.data for x in await lines_of(tmp_path, tail=3)] == last_three
    assert (await lines_of(tmp_path, tail=2003))[0].data.startswith(b"line 0 ")


async def test_checkpoints_stamp_lines_and_since_skips_older_spans(tmp_path: Path) -> None:
    out = tmp_path / "stdout.log"
    checkpoints = logfiles.Checkpoints()
    out.write_bytes(b"a\nb\n")
    checkpoints.mark(tmp_path)
    checkpoints.mark(tmp_path)  # no growth, no new checkpoint
    middle = time.time_ns()
    with out.open("ab") as f:
        f.write(b"c\n")
    checkpoints.mark(tmp_path)
    assert len((tmp_path / "stdout.idx").read_text().splitlines()) == 2
    with out.open("ab") as f:
        f.write(b"d")  # past the last checkpoint: stamped with the file's modification time
    lines = await lines_of(tmp_path)
    assert [x.data for x in lines] == [b"a\n", b"b\n", b"c\n", b"d"]
    assert lines[0].time == lines[1].time < middle <= lines[2].time <= lines[3].time
    assert [x.data for x in await lines_of(tmp_path, since=middle)] == [b"c\n", b"d"]
    assert [x.data for x in await lines_of(tmp_path, until=middle)] == [b"a\n", b"b\n"]


async def test_follow_holds_a_partial_line_until_it_is_complete(tmp_path: Path) -> None:
    out = tmp_path / "stdout.log"
    out.write_bytes(b"whole\npart")
    batches = logfiles.read(tmp_path, LogQuery(follow=True))
    assert [x.data for x in await anext(batches)] == [b"whole\n"]
    with out.open("ab") as f:
        f.write(b"ial\n")
    assert [x.data for x in await asyncio.wait_for(anext(batches), 5)] == [b"partial\n"]
    (tmp_path / "exit").write_text("0\n")
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(batches), 5)


async def test_until_stops_reading_at_the_first_later_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "stdout.log"
    checkpoints = logfiles.Checkpoints()
    out.write_bytes(b"a\nb\n")
    checkpoints.mark(tmp_path)
    middle = time.time_ns()
    with out.open("ab") as f:
        f.write(b"later\n" * 10_000)
    checkpoints.mark(tmp_path)
    real, pulled = logfiles._read_lines, []

    def counted(path: Path, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        for item in real(path, start, end):
            pulled.append(item)
            yield item

    monkeypatch.setattr(logfiles, "_read_lines", counted)
    assert [x.data for x in await lines_of(tmp_path, until=middle)] == [b"a\n", b"b\n"]
    assert len(pulled) <= 4


async def test_follow_reads_a_burst_in_bounded_polls_without_waiting(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logfiles, "FOLLOW_POLL_S", 600)  # a follower that waited between polls would stall
    out = tmp_path / "stdout.log"
    out.write_bytes(b"first\n")
    batches = logfiles.read(tmp_path, LogQuery(follow=True))
    assert [x.data for x in await anext(batches)] == [b"first\n"]
    line = b"x" * 1023 + b"\n"
    count = (logfiles.FOLLOW_BLOCKS + 8) * logfiles.BLOCK // len(line)
    with out.open("ab") as f:
        f.write(line * count)
    got: list[LogLine] = []
    while len(got) < count:
        got += await asyncio.wait_for(anext(batches), 30)
    await batches.aclose()
    assert len(got) == count and all(x.data == line for x in got)
    first_poll = [x for x in got if x.time == got[0].time]
    assert len(first_poll) * len(line) <= logfiles.FOLLOW_BLOCKS * logfiles.BLOCK


def test_the_engine_query_and_its_timestamped_lines() -> None:
    assert docker_logs.params(LogQuery(tail=5, since=T0, follow=True, stderr=False)) == {
        "stdout": "1", "stderr": "0", "follow": "1", "timestamps": "1", "tail": "5", "since": "1795000000.123456789"}
    assert docker_logs.params(LogQuery())["tail"] == "all"
    line = docker_logs.parse_line(STDERR, b"2026-11-18T11:06:40.123456789Z hi there\n")
    assert line == LogLine(stream=STDERR, time=T0, data=b"hi there\n")
