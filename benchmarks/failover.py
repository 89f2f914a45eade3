"""How long the cluster is without a decider after a leader dies, and without its tasks after a node dies.

Runs `shoal up`'s own plan (the `tests/cluster.py` helper: real processes, free ports, temporary
state dir, sim executor) and measures, in rounds:

- leader takeover: `kill -9` the orchestrator (then the scheduler) leader of a 3-manager cluster
  and at once scale a service, so there is work only a leader can do; the figure is the time from
  the kill to the first entry the new leader appends (`LeaderWrote` of the new term, by its event
  time). It includes the lease TTL (`--lease-ttl`, default 1.5 s), the standby's catch-up and its
  `LeaderElected`.
- node loss: `kill -9` an agent (its simulated tasks die with it) and keep it down; the figure is
  the time from the kill until the service again has all its replicas running, none on the dead
  node (the API polled every 50 ms). It includes the heartbeat grace (3 periods of 1 s). Swarm
  replaces the tasks of a down node through the restart policy, whose default delay is 5 s; the
  goal figure is for a service with `--restart-delay 0s`, the other is with the default.

    python -m benchmarks.failover --rounds 3

The last line printed is a JSON object with the figures (`leader_takeover_s`, `node_loss_replaced_s`:
the worst round of each; `node_loss_replaced_default_delay_s` with the 5 s default restart delay).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from schemas.codec import decode
from schemas.events import LeaderWrote
from services.kernel.ids import parse_ns
from services.kernel.jetstream import JetStreamLog, connect
from tests.cluster import LocalCluster, local_cluster
from tests.fault.harness import converge, create_service, kill_and_hold, leader, nodes_ready, ok, scale, tasks

REPLICAS = 12


async def _first_write(log: JetStreamLog, loop: str, term: int, after_seq: int, timeout_s: float = 60) -> int:
    """Event time (ns) of the first `LeaderWrote` of `loop` with a term newer than `term`."""
    seq = after_seq
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        entry = await log.get(seq + 1)
        if entry is None:
            await asyncio.sleep(0.02)
            continue
        seq += 1
        env = decode(entry.data)
        if isinstance(env.event, LeaderWrote) and env.event.loop == loop and env.event.term > term:
            return parse_ns(env.time)
    raise TimeoutError(f"no decision by a new {loop} leader within {timeout_s}s")


async def takeover(cluster: LocalCluster, log: JetStreamLog, service: str, loop: str, replicas: int) -> float:
    current = await leader(cluster, loop)
    await converge(cluster.api_url, "web", replicas - 1 if replicas > 1 else replicas)
    start_seq = await log.last_seq()
    killed_ns = time.time_ns()
    await cluster.kill(current.name)
    await scale(cluster.api_url, service, replicas)
    first = await _first_write(log, loop, current.term, start_seq)
    await converge(cluster.api_url, "web", replicas)
    return (first - killed_ns) / 1e9


async def leader_rounds(rounds: int, state: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"orchestrator": [], "scheduler": []}
    async with local_cluster(state, agents=2, executor="sim", managers=3) as cluster:
        service = await create_service(cluster.api_url, "web", 1)
        nc = await connect(cluster.options.nats_urls, "bench")
        log = JetStreamLog(nc, "SHOAL")
        replicas = 1
        try:
            for _ in range(rounds):
                for loop in out:
                    replicas += 1
                    out[loop].append(await takeover(cluster, log, service, loop, replicas))
                    print(f"  {loop} takeover {out[loop][-1]:.2f} s", flush=True)
        finally:
            await nc.close()
    return out


async def node_loss(state: Path, restart_delay_ns: int | None) -> float:
    async with local_cluster(state, agents=3, executor="sim") as cluster:
        api = cluster.api_url

        await nodes_ready(api, 3)
        await create_service(api, "web", REPLICAS, restart_delay_ns)
        await converge(api, "web", REPLICAS)
        victim = next(n["ID"] for n in await ok(api, "GET", "/nodes") if n["Description"]["Hostname"] == "test-1")
        killed = time.monotonic()
        await kill_and_hold(cluster.supervisor, "agent-1")
        while True:
            live = [t for t in await tasks(api, "web")
                    if t["Status"]["State"] == "running" and t["DesiredState"] == "running" and t["NodeID"] != victim]
            if len(live) == REPLICAS:
                return time.monotonic() - killed
            await asyncio.sleep(0.05)


async def measure(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="shoal-failover-") as tmp:
        takeovers = await leader_rounds(args.rounds, Path(tmp) / "leaders")
        losses = []
        for i in range(args.rounds):
            losses.append(await node_loss(Path(tmp) / f"node-{i}", 0))
            print(f"  node loss -> replacements running {losses[-1]:.2f} s (restart delay 0 s)", flush=True)
        default_delay = await node_loss(Path(tmp) / "node-default", None)
        print(f"  node loss -> replacements running {default_delay:.2f} s (default restart delay 5 s)", flush=True)
    every = takeovers["orchestrator"] + takeovers["scheduler"]
    return {
        "leader_takeover_s": round(max(every), 3),
        "leader_takeover_median_s": round(statistics.median(every), 3),
        "orchestrator_takeover_s": round(max(takeovers["orchestrator"]), 3),
        "scheduler_takeover_s": round(max(takeovers["scheduler"]), 3),
        "node_loss_replaced_s": round(max(losses), 3),
        "node_loss_replaced_median_s": round(statistics.median(losses), 3),
        "node_loss_replaced_default_delay_s": round(default_delay, 3),
        "rounds": args.rounds,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.failover", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="kills per loop and node losses (default 3)")
    args = p.parse_args(argv)
    print(f"python -m benchmarks.failover --rounds {args.rounds}", flush=True)
    figures = asyncio.run(measure(args))
    print(f"leader takeover (kill -9 -> first decision of the new leader): worst {figures['leader_takeover_s']} s, "
          f"median {figures['leader_takeover_median_s']} s (goal <= 2 s)")
    print(f"node loss -> replacements running (restart delay 0 s): worst {figures['node_loss_replaced_s']} s, "
          f"median {figures['node_loss_replaced_median_s']} s (goal <= 5 s); with Swarm's default 5 s restart "
          f"delay {figures['node_loss_replaced_default_delay_s']} s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
