"""What the routing mesh costs: HTTP requests per second and latency through an ingress port against
straight to the backend, in the same run, on loopback.

Three processes, so none steals the others' event loop: a minimal keep-alive HTTP backend, the mesh's
TCP listener (`services.agent.ingress.tcp`, the code every agent runs, with a fixed route to the
backend), and this process as the load generator (N keep-alive connections, one request in flight on
each, the latency of every request recorded). Each mode runs for `--seconds` after a warm-up, in
`--rounds` alternating rounds; each figure is the median over the rounds.

    python -m benchmarks.ingress --seconds 5 --connections 16 --rounds 3

`--mode kernel` measures the agent's kernel forwarding mode instead (root and nft needed): no mesh
process; the agent's own `KernelForwarder` installs the DNAT rules for the route (and removes them).

The last line printed is a JSON object with the figures. The goal (issue 7): the mesh costs at most
25% of the direct throughput and at most 1 ms of p99 latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from services.agent.ingress.kernel import KernelForwarder, check
from services.agent.ingress.table import Backend, Route
from services.kernel import eventloop

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
_WARMUP_S = 1.0


class _Backend(asyncio.Protocol):
    """Answers every complete request with the same response (pipelining-safe)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        n = self.buffer.count(b"\r\n\r\n")
        if n and self.transport is not None:
            self.buffer = self.buffer[self.buffer.rindex(b"\r\n\r\n") + 4:]
            self.transport.write(RESPONSE * n)


async def _serve_backend(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Backend, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def _route(port: int, backend_port: int) -> Route:
    return Route("tcp", port, "bench", "bench", (Backend("n1", "t1", "127.0.0.1", backend_port),))


async def _serve_mesh(port: int, backend_port: int) -> None:
    from services.agent.ingress.rotation import RoundRobin
    from services.agent.ingress.tcp import TcpListener

    route = _route(port, backend_port)
    listener = TcpListener("127.0.0.1", port, lambda: route, RoundRobin())
    await listener.open()
    try:
        await asyncio.Event().wait()
    finally:
        await listener.close()


class _Client(asyncio.Protocol):
    """One keep-alive connection sending the next request when the previous response is complete."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.received = 0
        self.sent_at = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(REQUEST)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received < len(RESPONSE):
            return
        self.received -= len(RESPONSE)
        now = time.perf_counter()
        if now >= self.run.start:
            self.run.latencies.append(now - self.sent_at)
        if now < self.run.stop:
            self._send()
        elif not self.done.done():
            self.done.set_result(None)
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed by the server"))


@dataclass
class _Run:
    start: float
    stop: float
    latencies: list[float]


async def _load(port: int, connections: int, seconds: float, pids: dict[str, int]) -> dict[str, float]:
    """Run the clients; besides throughput and latency, each named process's CPU per measured request."""
    loop = asyncio.get_running_loop()
    now = time.perf_counter()
    run = _Run(start=now + _WARMUP_S, stop=now + _WARMUP_S + seconds, latencies=[])
    cpu: list[dict[str, tuple[float, float]]] = []
    for at in (_WARMUP_S, _WARMUP_S + seconds):
        loop.call_later(at, lambda: cpu.append({name: _cpu_s(pid) for name, pid in pids.items()}))
    clients = []
    for _ in range(connections):
        _, client = await loop.create_connection(lambda: _Client(run), "127.0.0.1", port)
        clients.append(client)
    await asyncio.gather(*(c.done for c in clients))
    lat = sorted(run.latencies)
    figures = {
        "requests_per_s": round(len(lat) / seconds, 1),
        "p50_ms": round(lat[len(lat) // 2] * 1e3, 3),
        "p99_ms": round(lat[int(len(lat) * 0.99)] * 1e3, 3),
        "requests": len(lat),
    }
    for name in pids:
        (user0, sys0), (user1, sys1) = cpu[0][name], cpu[-1][name]
        figures[f"{name}_cpu_us"] = round((user1 + sys1 - user0 - sys0) / len(lat) * 1e6, 2)
        figures[f"{name}_sys_us"] = round((sys1 - sys0) / len(lat) * 1e6, 2)
    return figures


def _cpu_s(pid: int) -> tuple[float, float]:
    """User and system CPU seconds a process has used so far (Linux's /proc, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds."""
    return {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _wait_port(port: int) -> None:
    for _ in range(500):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        writer.close()
        return
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "benchmarks.ingress", *args)


async def main(args: argparse.Namespace) -> None:
    backend_port, mesh_port = _free_port(), _free_port()
    kernel = KernelForwarder(f"bench{os.getpid()}", ["127.0.0.1"]) if args.mode == "kernel" else None
    if kernel is not None:
        await check(kernel.addrs)
    procs = [await _spawn("--role", "backend", "--port", str(backend_port))]
    try:
        if kernel is None:
            procs.append(await _spawn("--role", "mesh", "--port", str(mesh_port), "--backend-port", str(backend_port)))
        else:
            await kernel.apply({("tcp", mesh_port): _route(mesh_port, backend_port)})
        await _wait_port(backend_port)
        await _wait_port(mesh_port)
        runs: dict[str, list[dict[str, float]]] = {"direct": [], "mesh": []}
        pids = {"generator": os.getpid(), "backend": procs[0].pid}
        mesh_pids = pids if kernel is not None else pids | {"mesh": procs[1].pid}
        for _ in range(args.rounds):  # alternated, so drifting machine load hits both modes alike
            runs["direct"].append(await _load(backend_port, args.connections, args.seconds, pids))
            runs["mesh"].append(await _load(mesh_port, args.connections, args.seconds, mesh_pids))
        direct, mesh = _median(runs["direct"]), _median(runs["mesh"])
    finally:
        if kernel is not None:
            await kernel.remove()
        for p in procs:
            p.terminate()
            await p.wait()
    throughput_cost = 1 - mesh["requests_per_s"] / direct["requests_per_s"]
    p99_added_ms = mesh["p99_ms"] - direct["p99_ms"]
    print(f"python -m benchmarks.ingress --seconds {args.seconds} --connections {args.connections} "
          f"--rounds {args.rounds} --mode {args.mode}")
    print(f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}, " + (f"mesh on {eventloop.default()}" if kernel is None else
                                                "mesh: nftables DNAT (kernel mode)"))
    for name, r in (("direct", direct), ("mesh", mesh)):
        print(f"{name:>7}: {r['requests_per_s']:>9.0f} req/s   p50 {r['p50_ms']:.3f} ms   p99 {r['p99_ms']:.3f} ms"
              f"   (rounds: {', '.join(str(round(x['requests_per_s'])) for x in runs[name])} req/s)")
    for name, r in (("direct", direct), ("mesh", mesh)):
        print(f"{name:>7}: CPU per request (of it in the kernel): " + ", ".join(
            f"{p} {r[f'{p}_cpu_us']:.1f} ({r[f'{p}_sys_us']:.1f}) us" for p in ("generator", "backend", "mesh")
            if f"{p}_cpu_us" in r))
    print(f"mesh cost: {throughput_cost:.1%} of throughput (goal <= 25%), p99 +{p99_added_ms:.3f} ms (goal <= 1 ms)")
    print(json.dumps({"direct": direct, "mesh": mesh, "throughput_cost": round(throughput_cost, 4),
                      "p99_added_ms": round(p99_added_ms, 3), "connections": args.connections,
                      "seconds": args.seconds, "rounds": args.rounds, "mode": args.mode,
                      "event_loop": eventloop.default()}))


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="alternating direct/mesh runs; medians reported")
    parser.add_argument("--mode", choices=("proxy", "kernel"), default="proxy",
                        help="the agent's --ingress-mode to measure against direct")
    parser.add_argument("--role", choices=("load", "backend", "mesh"), default="load", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--backend-port", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    a = _args()
    if a.role == "backend":
        asyncio.run(_serve_backend(a.port))
    elif a.role == "mesh":  # on the loop the agent would pick here, as the agent runs it
        with asyncio.Runner(loop_factory=eventloop.factory(eventloop.default())) as runner:
            runner.run(_serve_mesh(a.port, a.backend_port))
    else:
        asyncio.run(main(a))
