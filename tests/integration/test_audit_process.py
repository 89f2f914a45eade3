"""The audit process against a real JetStream stream: kill -9 mid-stream, restart, and the journal
holds every entry of the log exactly once, in order."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from schemas.codec import decode, encode
from schemas.events import ServiceCreated
from schemas.service import ServiceSpec
from services.kernel.eventlog import Append
from services.kernel.jetstream import JetStreamLog
from tests.e2e.cli import eventually
from tests.events import envelope
from tests.nats_server import NatsServer

pytestmark = pytest.mark.integration

ENTRIES = 3000
"""At least this many entries; the appender goes on until the audit has been killed, then a little more."""


async def start_audit(nats: NatsServer, out: Path, log_path: Path) -> asyncio.subprocess.Process:
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.audit", "--nats", nats.url, "--out", str(out), "--batch", "64",
            stdout=log, stderr=log)


def lines(out: Path) -> list[dict[str, object]]:
    if not out.exists():
        return []
    return [json.loads(x) for x in out.read_text().splitlines()]


async def append_batch(jslog: JetStreamLog, start: int) -> None:
    envs = [envelope(ServiceCreated(service_id=f"s{i}", spec=ServiceSpec(name=f"svc-{i}")), actor="api:alice")
            for i in range(start, start + 100)]
    await jslog.append([Append(subject=f"shoal.evt.service.s{i}.spec", data=encode(e), msg_id=e.id)
                        for i, e in enumerate(envs, start)])


async def append_many(jslog: JetStreamLog, killed: asyncio.Event) -> int:
    """Append until the audit was killed and 5 batches more (so the kill always lands mid-stream)."""
    start, after = 0, 0
    while start < ENTRIES or after < 5:
        await append_batch(jslog, start)
        start += 100
        after += killed.is_set()
        await asyncio.sleep(0.02)
    return start


async def test_kill_9_mid_stream_then_restart_writes_every_entry_exactly_once(
        nats: NatsServer, jslog: JetStreamLog, tmp_path: Path) -> None:
    out, log_path = tmp_path / "audit.jsonl", tmp_path / "audit.log"
    killed = asyncio.Event()
    appending = asyncio.create_task(append_many(jslog, killed))
    audit = await start_audit(nats, out, log_path)
    try:
        async def some_written() -> bool:
            return len(lines(out)) >= 300

        await eventually(some_written, 60, f"the audit writing lines; its log:\n{log_path.read_text()}")
        audit.send_signal(signal.SIGKILL)
        await audit.wait()
        killed.set()
        killed_at = len(lines(out))
        appended = await appending
        audit = await start_audit(nats, out, log_path)
        last = await jslog.last_seq()

        async def caught_up() -> bool:
            written = lines(out)
            return bool(written) and written[-1]["seq"] == last

        await eventually(caught_up, 60, f"the journal reaching seq {last}; its log:\n{log_path.read_text()}")
        await asyncio.sleep(2.5)  # idle: every fetch now times out, which must not end the process
        assert audit.returncode is None, log_path.read_text()[-3000:]
        await append_batch(jslog, appended)
        last = await jslog.last_seq()
        await eventually(caught_up, 60, f"the journal reaching seq {last} after idling")
    finally:
        audit.send_signal(signal.SIGTERM)
        await audit.wait()
    written = lines(out)
    assert killed_at < appended
    assert [x["seq"] for x in written] == list(range(1, last + 1))
    entries = [await jslog.get(seq) for seq in range(1, last + 1)]
    assert [x["id"] for x in written] == [decode(e.data).id for e in entries if e is not None]
    first_service = next(x for x in written if x["event"] == "ServiceCreated")
    assert first_service["text"] == "alice created service svc-0" and first_service["actor"] == "api:alice"
