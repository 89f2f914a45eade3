"""What fencing costs on the append path: a leader's `Writer` with a term against one without.

A fenced append goes as atomic batches (up to 999 events plus the `LeaderWrote` fence that
compare-and-sets on the term's `LeaderElected` entry); an unfenced one is the pipelined append
(a core publish per event, up to 1,000 acks in flight). Both write `TaskCreated` events with a
compare-and-set (expected 0 on the task's subjects), as the orchestrator does, to a real
nats-server (`tests/nats_server.py`, temporary store), alternating in one run, for two pass sizes:
1,000 events per `append` (a large reconcile pass) and 10 (a small one).

    python -m benchmarks.fencing --events 20000

The last line printed is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from schemas.events import LeaderElected, TaskCreated
from schemas.task import Task
from services.kernel import subjects
from services.kernel.ids import new_id
from services.kernel.jetstream import JetStreamLog, connect, ensure_stream
from services.kernel.state import ClusterState
from services.kernel.writer import Intent, Term, Writer
from tests.nats_server import nats_server


def _intents(count: int) -> list[Intent]:
    out = []
    for slot in range(count):
        task = Task(id=new_id(), service_id="svc", service_name="web", slot=slot + 1)
        out.append(Intent(TaskCreated(task=task), expect_seq=0, expect_subject=subjects.task_all("", task.id)))
    return out


async def _rate(writer: Writer, events: int, per_pass: int) -> float:
    state = ClusterState()
    passes = [_intents(per_pass) for _ in range(events // per_pass)]
    started = time.perf_counter()
    for intents in passes:
        results = await writer.append(intents, state)
        assert all(isinstance(r, int) for r in results), results[:3]
    return len(passes) * per_pass / (time.perf_counter() - started)


async def measure(url: str, events: int, rounds: int) -> dict[str, float]:
    nc = await connect([url], "bench")
    await ensure_stream(nc, "SHOAL")
    log = JetStreamLog(nc, "SHOAL")
    [elected] = await Writer(log, "bench").append(
        [Intent(LeaderElected(loop="orchestrator", term=1, holder="bench"))], ClusterState())
    assert isinstance(elected, int)
    plain, fenced = Writer(log, "orchestrator"), Writer(log, "orchestrator", Term("orchestrator", 1, elected))
    figures: dict[str, float] = {}
    for per_pass in (1000, 10):
        n = events if per_pass == 1000 else events // 10
        for name, writer in (("plain", plain), ("fenced", fenced)):
            best = max([await _rate(writer, n, per_pass) for _ in range(rounds)])
            figures[f"{name}_{per_pass}_per_pass_per_s"] = round(best)
            print(f"  {name:6} {per_pass:5} events per append: {best:9,.0f} events/s", flush=True)
    await nc.close()
    return figures


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fencing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=2, help="best of this many runs per figure")
    args = p.parse_args(argv)
    print(f"python -m benchmarks.fencing --events {args.events} --rounds {args.rounds}", flush=True)
    with TemporaryDirectory(prefix="shoal-fencing-") as tmp, nats_server(Path(tmp) / "store") as s:
        figures = asyncio.run(measure(s.url, args.events, args.rounds))
    for size in (1000, 10):
        ratio = figures[f"fenced_{size}_per_pass_per_s"] / figures[f"plain_{size}_per_pass_per_s"]
        figures[f"fenced_over_plain_{size}"] = round(ratio, 2)
        print(f"fenced / plain at {size} events per append: {ratio:.2f} x")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
