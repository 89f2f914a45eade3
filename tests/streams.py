"""Streams as an earlier Shoal left them, for the tests of what this one does on finding them."""

from __future__ import annotations

from nats.js import api

from services.kernel import subjects
from services.kernel.eventlog import Append
from services.kernel.jetstream import LAYOUT_KEY, JetStreamLog, connect


async def earlier_stream(url: str, *subjects_written: str, layout: str | None = None) -> None:
    """The stream as an earlier Shoal created it, with `layout` in its metadata (None: the first
    Shoals, which recorded none), holding these subjects."""
    nc = await connect([url], "earlier")
    await nc.jetstream().add_stream(api.StreamConfig(
        name="SHOAL", subjects=[subjects.ALL], storage=api.StorageType.FILE, allow_atomic=True,
        metadata=None if layout is None else {LAYOUT_KEY: layout}))
    await JetStreamLog(nc, "SHOAL").append([Append(s, b"{}", f"m{i}") for i, s in enumerate(subjects_written)])
    await nc.close()
