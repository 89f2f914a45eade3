"""The `shoal` client commands: rendering (explain against its response contract, the events table),
arguments, and what a user sees when the api is wrong or absent (a message and exit 1, never a traceback)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from services.cli import events, explain
from services.cli.client import base_url
from tests.nats_server import free_port

EXPLAIN = {
    "Task": "t" * 25, "ServiceID": "s" * 25, "ServiceName": "web", "Slot": 2, "NodeID": "n2" * 12 + "x",
    "State": "assigned", "Message": "scheduler assigned task to node",
    "Nodes": [
        {"NodeID": "n3" * 12 + "x", "Hostname": "h3", "Eligible": False, "Filter": "constraints",
         "Reason": "scheduling constraints not satisfied", "Rank": None,
         "Score": {"ServiceTasks": 0, "TotalTasks": 0, "RecentFailures": 0}, "Chosen": False},
        {"NodeID": "n1" * 12 + "x", "Hostname": "h1", "Eligible": True, "Filter": "", "Reason": "", "Rank": 2,
         "Score": {"ServiceTasks": 1, "TotalTasks": 4, "RecentFailures": 0}, "Chosen": False},
        {"NodeID": "n2" * 12 + "x", "Hostname": "h2", "Eligible": True, "Filter": "", "Reason": "", "Rank": 1,
         "Score": {"ServiceTasks": 0, "TotalTasks": 1, "RecentFailures": 1}, "Chosen": True},
        {"NodeID": "n4" * 12 + "x", "Hostname": "h4", "Eligible": False, "Filter": "ready",
         "Reason": "node is down", "Rank": None,
         "Score": {"ServiceTasks": 0, "TotalTasks": 0, "RecentFailures": 0}, "Chosen": False},
    ],
}


def test_explain_shows_the_chosen_node_then_the_ranking_then_the_rejections() -> None:
    out = explain.render(EXPLAIN)
    summary, table = out.split("\n\n")
    assert summary.splitlines() == [
        f"Task:     {'t' * 25}", f"Service:  web ({'s' * 25}), slot 2",
        "State:    assigned: scheduler assigned task to node", f"Node:     {'n2' * 12}x",
    ]
    header, *rows = table.splitlines()
    assert header.split() == ["NODE", "HOSTNAME", "VERDICT", "DETAIL"]
    assert [r.split()[:3] for r in rows] == [
        ["n2n2n2n2n2n2", "h2", "chosen"], ["n1n1n1n1n1n1", "h1", "eligible"],
        ["n3n3n3n3n3n3", "h3", "rejected"], ["n4n4n4n4n4n4", "h4", "rejected"],
    ]
    assert rows[0].endswith("rank 1: 0 task(s) of the service, 1 in all, 1 recent failure(s)")
    assert rows[2].endswith("constraints: scheduling constraints not satisfied")
    assert rows[3].endswith("ready: node is down")
    assert len({r.index(r.split()[2]) for r in rows}) == 1  # the VERDICT column is aligned


def test_explain_of_a_pending_global_task_in_an_empty_cluster() -> None:
    doc = {**EXPLAIN, "Slot": None, "NodeID": "", "State": "pending", "Message": "no suitable node", "Nodes": []}
    out = explain.render(doc, trunc=False)
    assert f"Service:  web ({'s' * 25})\n" in out and "Node:     (not assigned)" in out
    assert out.endswith("(no nodes in the cluster)")


def test_events_rows_and_query() -> None:
    line: dict[str, Any] = {"Seq": 7, "Subject": "shoal.evt.task.t1._.desired", "Entry": {
        "ID": "e", "Time": "2026-11-29T10:00:00.000000001Z", "Actor": "orchestrator",
        "Event": {"Type": "TaskCreated", "Task": {"ID": "t1", "ServiceID": "s1"}}}}
    cells = events.row(line).split()
    assert cells == ["7", "2026-11-29T10:00:00.000000001Z", "orchestrator", "TaskCreated", "task=t1"]
    assert events.header().split() == ["SEQ", "TIME", "ACTOR", "EVENT", "OBJECT"]
    long = {**line, "Entry": {**line["Entry"], "Actor": "agent:" + "n" * 40}}  # wider than its column
    assert events.row(long).split()[2:4] == ["agent:" + "n" * 40, "TaskCreated"]
    assert events.row({"Seq": 8, "Subject": "x", "Error": "undecodable entry"}).split() == ["8", "(undecodable)", "x"]
    args = events.parse(["--since", "3", "--filter", "type=TaskCreated", "--filter", "type=TaskRemoved",
                         "--filter", "service=s1", "-f"])
    q = events.query(args)
    assert (q["since"], q["follow"]) == ("3", "1")
    assert json.loads(q["filters"]) == {"type": {"TaskCreated": True, "TaskRemoved": True}, "service": {"s1": True}}


def test_events_refuse_a_malformed_filter(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        events.parse(["--filter", "colour=red"])
    assert done.value.code == 2 and "KEY one of type, actor" in capsys.readouterr().err


@pytest.mark.parametrize(("addr", "url"), [("127.0.0.1:2375", "http://127.0.0.1:2375"),
                                           ("tcp://h:1/", "http://h:1"), ("https://h", "https://h")])
def test_addresses(addr: str, url: str) -> None:
    assert base_url(addr) == url


def shoal(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli.main", *args], capture_output=True, text=True,
                          timeout=60, env=env)


@pytest.mark.parametrize("command", [["events"], ["state", "--at", "3"], ["explain", "abc"]])
def test_a_wrong_address_is_a_message_not_a_traceback(command: list[str]) -> None:
    done = shoal(*command, "--api", f"127.0.0.1:{free_port()}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("shoal: cannot reach the Shoal API at http://127.0.0.1:")
    assert "Point --api or SHOAL_API at it" in done.stderr


@pytest.fixture
async def not_shoal() -> AsyncIterator[str]:
    """Some other web server, and one that answers like Shoal's api with an error."""
    async def html(request: web.Request) -> web.Response:
        return web.Response(status=404, text="<h1>nope</h1>", content_type="text/html")

    async def docker_error(request: web.Request) -> web.Response:
        return web.json_response({"message": "task nosuch not found"}, status=404)

    async def not_json(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/shoal/tasks/nosuch/explain", docker_error)
    app.router.add_get("/shoal/state", not_json)
    app.router.add_get("/{tail:.*}", html)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"127.0.0.1:{port}"
    await runner.cleanup()


async def test_errors_from_the_server_are_one_line(not_shoal: str) -> None:
    # the server runs on this loop, so the CLI runs in a thread
    results = [await asyncio.to_thread(shoal, *c, "--api", not_shoal)
               for c in (["explain", "nosuch"], ["events"], ["state"])]
    assert [r.returncode for r in results] == [1, 1, 1]
    assert all("Traceback" not in r.stderr for r in results)
    assert results[0].stderr == "shoal: Error response from the Shoal API: task nosuch not found\n"
    assert "answered 404 Not Found without Docker's error shape" in results[1].stderr
    assert "did not answer JSON" in results[2].stderr


def test_usage_lists_the_client_commands() -> None:
    out = shoal("--help").stdout
    assert all(f"  {c} " in out for c in ("events", "state", "explain"))
