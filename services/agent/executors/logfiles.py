"""The `process` executor's task logs: plain files, stamped by checkpoints, read on request.

A task's command writes straight into `stdout.log` / `stderr.log` (no pipe through the agent, so
a task never blocks on, or dies with, the agent). Files carry no times, so while the agent watches
a task it appends a checkpoint `<size> <unix ns>` to `stdout.idx` / `stderr.idx` whenever a file
has grown (every `CHECKPOINT_S`, and when the task exits). A line is stamped with the first
checkpoint that covers its end; a line past the last checkpoint with the file's modification time.
So times are exact to within a checkpoint period while the agent runs, and lines written while the
agent was down get the time of the first checkpoint after its restart.

`since` skips whole checkpoint spans by bisection, `tail` reads backwards from the end, and
`follow` polls the files' sizes (`FOLLOW_POLL_S`) until the task's `exit` file appears.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import heapq
import itertools
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from pathlib import Path

from schemas.logs import STDERR, STDOUT, LogLine, LogQuery

CHECKPOINT_S = 0.5
FOLLOW_POLL_S = 0.2
BLOCK = 64 * 1024
"""Read size, and the most data one batch of lines carries."""
FOLLOW_BLOCKS = 32
"""The most blocks `follow` reads of one file per poll, so a chatty task never makes it hold a burst
in memory or the loop for long; a follower behind polls again without waiting."""
_NAMES = {STDOUT: "stdout", STDERR: "stderr"}


def log_path(task_dir: Path, stream: int) -> Path:
    return task_dir / f"{_NAMES[stream]}.log"


def _index_path(task_dir: Path, stream: int) -> Path:
    return task_dir / f"{_NAMES[stream]}.idx"


class Checkpoints:
    """Appends a checkpoint for each log file that grew since the last one it wrote."""

    def __init__(self) -> None:
        self._sizes: dict[Path, int] = {}

    def mark(self, task_dir: Path) -> None:
        now = time.time_ns()
        for stream in _NAMES:
            path = log_path(task_dir, stream)
            try:
                size = path.stat().st_size
            except OSError:
                continue
            index = _index_path(task_dir, stream)
            last = self._sizes.get(index)
            if last is None:
                offsets, _ = _stamps(index)
                last = offsets[-1] if offsets else 0
            if size > last:
                with contextlib.suppress(OSError), index.open("a") as f:
                    f.write(f"{size} {now}\n")
            self._sizes[index] = max(size, last)

    def forget(self, task_dir: Path) -> None:
        for stream in _NAMES:
            self._sizes.pop(_index_path(task_dir, stream), None)


def _stamps(index: Path) -> tuple[list[int], list[int]]:
    """Offsets and times of the checkpoints (a torn last line, from a crash mid-write, is ignored)."""
    offsets: list[int] = []
    times: list[int] = []
    with contextlib.suppress(OSError):
        for line in index.read_text().splitlines():
            size, _, stamp = line.partition(" ")
            if size.isdigit() and stamp.isdigit() and (not offsets or int(size) > offsets[-1]):
                offsets.append(int(size))
                times.append(int(stamp))
    return offsets, times


class _File:
    """One stream's file as it was when the request arrived: where to start, where history ends."""

    def __init__(self, task_dir: Path, stream: int, query: LogQuery) -> None:
        self.path = log_path(task_dir, stream)
        self.stream = stream
        self.offsets, self.times = _stamps(_index_path(task_dir, stream))
        try:
            st = self.path.stat()
            self.size, self.mtime = st.st_size, st.st_mtime_ns
        except OSError:
            self.size, self.mtime = 0, 0
        self.start = max(self._since_offset(query.since), _tail_offset(self.path, query.tail, self.size))

    def _since_offset(self, since: int) -> int:
        """Lines stamped by checkpoint k end in (offsets[k-1], offsets[k]]: skip spans older than `since`."""
        k = bisect.bisect_left(self.times, since)
        return self.offsets[k - 1] if k > 0 else 0

    def stamp(self, end: int) -> int:
        k = bisect.bisect_left(self.offsets, end)
        return self.times[k] if k < len(self.offsets) else self.mtime

    def lines(self, end: int) -> Iterator[LogLine]:
        for offset, data in _read_lines(self.path, self.start, end):
            yield LogLine(stream=self.stream, time=self.stamp(offset), data=data)


def _read_lines(path: Path, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(end offset, line) for each line in [start, end); an unterminated last line is yielded too, and
    a line longer than a block is cut into block-sized pieces, as Docker splits long lines."""
    if end <= start:
        return
    with contextlib.suppress(OSError), path.open("rb") as f:
        f.seek(start)
        pos, rest = start, b""
        while pos < end:
            block = f.read(min(BLOCK, end - pos))
            if not block:
                break
            pos += len(block)
            parts = (rest + block).split(b"\n")
            rest = parts.pop()
            offset = pos - len(rest) - sum(len(p) + 1 for p in parts)
            for part in parts:
                offset += len(part) + 1
                yield from _pieces(offset, part + b"\n")
            if len(rest) >= BLOCK:
                yield from _pieces(pos, rest)
                rest = b""
        if rest:
            yield pos, rest


def _pieces(end: int, line: bytes) -> Iterator[tuple[int, bytes]]:
    """A line cut into pieces of at most a block, each with the offset where it ends."""
    start = end - len(line)
    for i in range(0, len(line), BLOCK):
        piece = line[i:i + BLOCK]
        yield start + i + len(piece), piece


def _tail_offset(path: Path, tail: int, size: int) -> int:
    """Where the last `tail` lines of the first `size` bytes start (0 for all)."""
    if tail < 0:
        return 0
    if tail == 0 or size == 0:
        return size
    with path.open("rb") as f:
        pos = size
        newlines = 0
        # The final newline ends the last line, it does not start one.
        f.seek(size - 1)
        skip_last = f.read(1) == b"\n"
        while pos > 0:
            step = min(BLOCK, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            if skip_last and pos + step == size:
                block = block[:-1]
            i = len(block)
            while (i := block.rfind(b"\n", 0, i)) >= 0:
                newlines += 1
                if newlines >= tail:
                    return pos + i + 1
    return 0


def _batches(lines: Iterable[LogLine]) -> Iterator[list[LogLine]]:
    batch: list[LogLine] = []
    size = 0
    for line in lines:
        batch.append(line)
        size += len(line.data)
        if size >= BLOCK:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _wanted_streams(query: LogQuery) -> list[int]:
    return [s for s, on in ((STDOUT, query.stdout), (STDERR, query.stderr)) if on]


async def read(task_dir: Path, query: LogQuery) -> AsyncGenerator[list[LogLine], None]:
    """The task's lines as the query asks, in batches; with `follow`, until the task has exited and
    everything it wrote has been sent (or `until` has passed)."""
    files = [_File(task_dir, stream, query) for stream in _wanted_streams(query)]
    running = query.follow and not _exited(task_dir)
    ends = [_history_end(f, running) for f in files]
    merged = heapq.merge(*(f.lines(end) for f, end in zip(files, ends, strict=True)), key=lambda line: line.time)
    # The merged stream is in time order: the first line after `until` ends it, the rest is never read.
    upto = itertools.takewhile(lambda line: not query.until or line.time <= query.until, merged)
    history: Iterable[LogLine] = (line for line in upto if line.time >= query.since)
    if query.tail >= 0:
        history = collections.deque(history, maxlen=query.tail)
    for batch in _batches(history):
        yield batch
    if running:
        async for batch in _follow(task_dir, files, ends, query):
            yield batch


def _exited(task_dir: Path) -> bool:
    """The wrapper writes `exit` when the command ends; a removed task has no directory at all."""
    return (task_dir / "exit").exists() or not task_dir.exists()


def _history_end(f: _File, running: bool) -> int:
    """While the task runs, history stops after the last complete line; `follow` sends the rest."""
    if not running or f.size == 0:
        return f.size
    with f.path.open("rb") as fh:
        fh.seek(max(0, f.size - BLOCK))
        block = fh.read(f.size - fh.tell())
    cut = block.rfind(b"\n")
    return f.size - len(block) + cut + 1 if cut >= 0 else max(f.start, f.size - len(block))


async def _follow(task_dir: Path, files: list[_File], positions: list[int],
                  query: LogQuery) -> AsyncIterator[list[LogLine]]:
    positions = list(positions)
    while True:
        exited = _exited(task_dir)
        now = time.time_ns()
        if query.until and now > query.until:
            return
        fresh: list[LogLine] = []
        behind = False
        for i, f in enumerate(files):
            try:
                size = os.stat(f.path).st_size
            except OSError:
                continue
            stop = min(size, positions[i] + FOLLOW_BLOCKS * BLOCK)
            behind = behind or stop < size
            end = size if exited and stop == size else _last_newline(f.path, positions[i], stop)
            for _, data in _read_lines(f.path, positions[i], end):
                fresh.append(LogLine(stream=f.stream, time=now, data=data))
            positions[i] = max(positions[i], end)
        for batch in _batches(fresh):
            yield batch
        if exited and not behind:
            return
        await asyncio.sleep(0 if behind else FOLLOW_POLL_S)


def _last_newline(path: Path, start: int, size: int) -> int:
    """The offset just past the last complete line in [start, size), or `start` if none."""
    if size <= start:
        return start
    with path.open("rb") as f:
        pos = size
        while pos > start:
            step = min(BLOCK, pos - start)
            f.seek(pos - step)
            block = f.read(step)
            cut = block.rfind(b"\n")
            if cut >= 0:
                return pos - step + cut + 1
            pos -= step
            if size - pos >= BLOCK:  # a line longer than a block goes out in pieces
                return size
    return start
