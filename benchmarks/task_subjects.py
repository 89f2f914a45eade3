"""What the task subject layout costs nats-server: the design's original `task.<node>.<task>` against
`task.<task>.<node>`, Shoal's layout from 2026-12-07 to 2026-12-08. Shoal now takes the cheap half of
each: waiting tasks under `task.<task>` (the second's scopes), assigned ones under `assigned.<node>`
(the first's filters; `services/kernel/subjects.py`).

Every task write compare-and-sets on all of the task's subjects, and the server resolves that scope
on each append: under `task.<node>.<task>` it is `task.*.<task>.>`, under `task.<task>.<node>` the
literal prefix `task.<task>.>`. Agents pay the other way round: their filter is `task.<node>.>` in
the first layout and `task.*.<node>.>` in the second. For each layout, on a fresh nats-server
(`tests/nats_server.py`, file storage as `ensure_stream` makes it), this stores `--tasks` tasks
(desired under `_`, placement and status under one of 1,000 nodes) and measures nats-server's CPU
(user + system, from /proc) for:

- `--appends` new tasks' first entries with the layout's compare-and-set (expected 0), and without;
- the last entry on 500 node filters (a sim agent's projection start);
- `--appends` status entries followed by ordered push consumers as `EventLog.follow` makes them:
  2 with 500 node filters each (sim agents) and 100 with one each (single-node agents), then the
  same consumers catching up from sequence 1;
- the same consumers following `--appends` more status entries sent at `--paced` entries/s, a rate
  the server keeps up with, while the stream's API is probed for stalls
  (`benchmarks/stream_stalls.py`): once the entries fill a few 8 MB blocks (`--appends 100000`),
  this shows what each new block costs the server for each kind of filter.

    python -m benchmarks.task_subjects --tasks 100000 --appends 20000
    python -m benchmarks.task_subjects --tasks 100000 --appends 100000 --paced 3000

The last line printed is a JSON object with the figures (microseconds per append, seconds otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from benchmarks.schedule import cpu_s
from benchmarks.stream_stalls import blocks, probed
from services.kernel.ids import new_id
from services.kernel.jetstream import ensure_stream
from tests.nats_server import nats_server

STREAM = "SHOAL"
NODES = 1000
IN_FLIGHT = 1000


@dataclass(frozen=True)
class Layout:
    name: str
    node_first: bool

    def subject(self, node: str, task: str, leaf: str) -> str:
        first, second = (node, task) if self.node_first else (task, node)
        return f"shoal.evt.task.{first}.{second}.{leaf}"

    def scope(self, task: str) -> str:
        return f"shoal.evt.task.*.{task}.>" if self.node_first else f"shoal.evt.task.{task}.>"

    def node_filter(self, node: str) -> str:
        return f"shoal.evt.task.{node}.>" if self.node_first else f"shoal.evt.task.*.{node}.>"

    def node_of(self, subject: str) -> str:
        tokens = subject.split(".")
        return tokens[3] if self.node_first else tokens[4]


LAYOUTS = (Layout("node-first", True), Layout("task-first", False))


async def _publish(js: JetStreamContext, entries: Sequence[tuple[str, dict[str, str] | None]]) -> None:
    """Pipelined, as `JetStreamLog.append` is: up to IN_FLIGHT acks outstanding."""
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(subject: str, headers: dict[str, str] | None) -> None:
        async with slots:
            await js.publish(subject, b"x" * 200, headers=headers)

    await asyncio.gather(*(one(s, h) for s, h in entries))


async def _publish_paced(js: JetStreamContext, entries: Sequence[tuple[str, dict[str, str] | None]],
                         per_s: int) -> None:
    """`per_s` entries a second, sent a hundredth of a second's worth at a time."""
    step = max(1, per_s // 100)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n, i in enumerate(range(0, len(entries), step)):
        await _publish(js, entries[i : i + step])
        await asyncio.sleep(max(0.0, started + (n + 1) / 100 - loop.time()))


async def _follow(js: JetStreamContext, filters: list[list[str]], start: int,
                  expect: list[int]) -> list[JetStreamContext.PushSubscription]:
    """Ordered push consumers from `start`, as `EventLog.follow` makes them, one per list of filters;
    returns once each has received its `expect` entries."""
    got = [0] * len(filters)
    done = asyncio.Event()

    def counter(i: int) -> Callable[[Msg], Awaitable[None]]:
        async def on_msg(_: Msg) -> None:
            got[i] += 1
            if all(g >= e for g, e in zip(got, expect, strict=True)):
                done.set()
        return on_msg

    subs = []
    for i, fs in enumerate(filters):
        config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start,
                                    filter_subjects=None if len(fs) == 1 else fs)
        subs.append(await js.subscribe(fs[0] if len(fs) == 1 else "", cb=counter(i), ordered_consumer=True,
                                       config=config, stream=STREAM))
    async with asyncio.timeout(600):
        await done.wait()
    return subs


async def _stop(subs: list[JetStreamContext.PushSubscription]) -> None:
    for sub in subs:
        await sub.unsubscribe()
    await asyncio.sleep(1)  # the server has deleted the consumers before the next figure


def _new_statuses(layout: Layout, nodes: list[str], n: int) -> list[tuple[str, dict[str, str] | None]]:
    return [(layout.subject(nodes[i % NODES], new_id(), "status"), None) for i in range(n)]


@contextlib.asynccontextmanager
async def _following(js: JetStreamContext, filters: list[list[str]], groups: list[list[str]], on_node: Counter[str],
                     layout: Layout, status: list[tuple[str, dict[str, str] | None]]) -> AsyncIterator[None]:
    """The consumers follow from the stream's end while the body appends `status`; on leaving, once
    each has received every new entry on its nodes, they are stopped."""
    start = int((await js.stream_info(STREAM)).state.last_seq) + 1
    before = on_node.copy()
    on_node.update(layout.node_of(s) for s, _ in status)
    following = asyncio.create_task(_follow(js, filters, start, [sum(on_node[n] - before[n] for n in g)
                                                                 for g in groups]))
    await asyncio.sleep(1)  # the consumers exist before the appends begin
    yield
    await _stop(await following)


async def measure(layout: Layout, tasks: int, appends: int, paced: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    with nats_server() as server:
        pid = server.process.pid
        nc = await nats.connect(server.url, pending_size=512 * 1024 * 1024)
        js = nc.jetstream()
        await ensure_stream(nc, STREAM)
        nodes = [new_id() for _ in range(NODES)]
        on_node = Counter[str]()  # entries stored under each node's subjects
        stored: list[tuple[str, dict[str, str] | None]] = []
        for i in range(tasks):
            task, node = new_id(), nodes[i % NODES]
            stored += [(layout.subject("_", task, "desired"), None), (layout.subject(node, task, "placement"), None),
                       (layout.subject(node, task, "status"), None)]
            on_node[node] += 2
        await _publish(js, stored)

        cas = [(layout.subject("_", t, "desired"), {"Nats-Expected-Last-Subject-Sequence": "0",
                                                    "Nats-Expected-Last-Subject-Sequence-Subject": layout.scope(t)})
               for t in (new_id() for _ in range(appends))]
        used = cpu_s(pid)
        await _publish(js, cas)
        figures["create_with_cas_us"] = 1e6 * (cpu_s(pid) - used) / appends
        used = cpu_s(pid)
        await _publish(js, [(layout.subject("_", new_id(), "desired"), None) for _ in range(appends)])
        figures["create_without_cas_us"] = 1e6 * (cpu_s(pid) - used) / appends
        used = cpu_s(pid)
        for node in nodes[:500]:
            await js.get_last_msg(STREAM, layout.node_filter(node))
        figures["last_entry_500_filters_s"] = cpu_s(pid) - used

        for label, groups in (("2x500", [nodes[:500], nodes[500:]]), ("100x1", [[n] for n in nodes[:100]])):
            filters = [[layout.node_filter(n) for n in g] for g in groups]
            status = _new_statuses(layout, nodes, appends)
            used = cpu_s(pid)
            async with _following(js, filters, groups, on_node, layout, status):
                await _publish(js, status)
            figures[f"follow_{label}_us"] = 1e6 * (cpu_s(pid) - used) / appends
            used = cpu_s(pid)
            await _stop(await _follow(js, filters, 1, [sum(on_node[n] for n in g) for g in groups]))
            figures[f"catch_up_{label}_s"] = cpu_s(pid) - used
            if paced:
                status = _new_statuses(layout, nodes, appends)
                blocks_before = blocks(server.store, STREAM)
                async with probed(server.url, STREAM) as stalls, \
                        _following(js, filters, groups, on_node, layout, status):
                    await _publish_paced(js, status, paced)
                stream = stalls.report(blocks(server.store, STREAM) - blocks_before)
                figures.update({f"paced_{label}_{key}": stream[key]
                                for key in ("blocks", "stalls", "stalled_s", "p99_ms", "max_ms")})
        await nc.close()
    return {k: round(v, 2) for k, v in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else "")
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks stored before measuring")
    parser.add_argument("--appends", type=int, default=20_000, help="entries appended per figure")
    parser.add_argument("--paced", type=int, default=0, metavar="PER_S",
                        help="also follow --appends entries sent at this rate, probing the stream for stalls")
    args = parser.parse_args()
    results = {}
    for layout in LAYOUTS:
        started = time.perf_counter()
        results[layout.name] = asyncio.run(measure(layout, args.tasks, args.appends, args.paced))
        print(layout.name, results[layout.name], f"({time.perf_counter() - started:.0f} s)", flush=True)
    print(json.dumps({"tasks": args.tasks, "appends": args.appends, **results}))


if __name__ == "__main__":
    main()
