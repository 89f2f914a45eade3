"""Admission: a new node joins only with one of the cluster's current join tokens, in the token's role.

In Swarm a manager checks the token when a node asks to join. Shoal has no join request (an agent
appends its own `NodeJoined`), so the agent checks the token against the tokens in the log
(`ClusterCreated` and `JoinTokenRotated` on `shoal.evt.cluster`) before it writes anything: a
refused agent leaves no trace in the log and exits with `EXIT_REFUSED`. A node that has joined
before rejoins without a token, as a Swarm node keeps its certificate across restarts.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from pathlib import Path

from services.kernel import subjects
from services.kernel.eventlog import EventLog
from services.kernel.projection import Projection
from services.kernel.state import Cluster

log = logging.getLogger(__name__)

EXIT_REFUSED = 3
"""The agent's exit code when its join token is refused (1 is any other failure)."""

_HOW = "get the current one with `docker swarm join-token -q worker` (or `manager`)"


class JoinRefused(Exception):
    """The node may not join; the message tells the operator what to do."""


def role_for(cluster: Cluster, token: str) -> str:
    """The role a token admits, or `JoinRefused` saying why it admits none."""
    if not token:
        raise JoinRefused(f"this node has not joined the cluster yet and no join token was given: "
                          f"pass --token or --token-file (env SHOAL_JOIN_TOKEN); {_HOW}")
    for role, current in (("manager", cluster.manager_token), ("worker", cluster.worker_token)):
        if current and hmac.compare_digest(token.encode(), current.encode()):
            return role
    same_cluster = _digest(token) == _digest(cluster.worker_token)
    why = "was rotated or is mistyped" if same_cluster else "is not a token of this cluster"
    raise JoinRefused(f"join token refused: it {why}; {_HOW}")


def _digest(token: str) -> str:
    """The cluster part of `SWMTKN-1-<digest>-<secret>` (both roles' tokens share it)."""
    parts = token.split("-")
    return parts[2] if len(parts) == 4 else ""


async def current_cluster(eventlog: EventLog) -> Cluster:
    """The cluster as the log says now, waiting for the api to create it if it has not yet."""
    projection = Projection(eventlog, filter_subject=subjects.CLUSTER)
    await projection.start()
    try:
        if projection.state.cluster is None:
            log.info("waiting for the cluster to be created (is the api running?)")
        while projection.state.cluster is None:
            projection.updated.clear()
            await projection.updated.wait()
        return projection.state.cluster
    finally:
        await projection.stop()


async def read_token_file(path: Path) -> str:
    """The token in `path`, waiting for the file to appear (`shoal up` writes it once the api answers)."""
    token = await asyncio.to_thread(_read, path)
    if token is None:
        log.info("waiting for the join token file", extra={"path": str(path)})
    while token is None:
        await asyncio.sleep(0.2)
        token = await asyncio.to_thread(_read, path)
    return token


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None
