"""Admission: a new node joins only with one of the cluster's current tokens, and takes the token's role."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from schemas.codec import decode
from schemas.events import ClusterCreated, JoinTokenRotated, NodeJoined, NodeRejoined
from services.agent.admission import JoinRefused, read_token_file, role_for
from services.agent.config import AgentConfig
from services.agent.identity import Identity, identities
from services.agent.join import join
from services.kernel.memlog import MemoryLog
from services.kernel.state import Cluster, ClusterState
from services.kernel.writer import Intent, Writer

WORKER = "SWMTKN-1-digest-worker"
MANAGER = "SWMTKN-1-digest-manager"


def nodes(state_dir: Path, count: int = 1) -> list[Identity]:
    return identities(AgentConfig(state_dir=state_dir, executor="sim", engine="", addr="10.0.0.7", hostname="box",
                                  labels={}, heartbeat_s=1, nodes=count, sim_start_latency_s=0, sim_failure_rate=0,
                                  sim_cpus=1, sim_memory_bytes=1 << 30))


async def cluster_log(*more: object) -> MemoryLog:
    log = MemoryLog()
    events = [ClusterCreated(cluster_id="c", worker_token=WORKER, manager_token=MANAGER), *more]
    for event in events:
        await Writer(log, "api").append([Intent(event)], ClusterState())  # type: ignore[arg-type]
    return log


def joined(log: MemoryLog) -> list[NodeJoined]:
    return [ev for e in log.entries if isinstance(ev := decode(e.data).event, NodeJoined)]


@pytest.mark.parametrize(("token", "role"), [(WORKER, "worker"), (MANAGER, "manager")])
async def test_the_role_follows_the_token(tmp_path: Path, token: str, role: str) -> None:
    log = await cluster_log()
    await join(log, nodes(tmp_path, 2), token)
    assert [j.spec.role for j in joined(log)] == [role, role]


@pytest.mark.parametrize(("token", "why"), [
    ("SWMTKN-1-digest-guessed", "was rotated or is mistyped"),
    ("SWMTKN-1-other-worker", "is not a token of this cluster"),
    ("garbage", "is not a token of this cluster"),
    ("", "no join token was given"),
])
async def test_a_wrong_token_writes_nothing_and_says_why(tmp_path: Path, token: str, why: str) -> None:
    log = await cluster_log()
    before = len(log.entries)
    with pytest.raises(JoinRefused, match=why) as refused:
        await join(log, nodes(tmp_path), token)
    assert "docker swarm join-token -q worker" in str(refused.value)
    assert len(log.entries) == before


async def test_a_rotated_token_is_refused_for_new_nodes_but_joined_nodes_rejoin(tmp_path: Path) -> None:
    log = await cluster_log()
    await join(log, nodes(tmp_path / "old"), WORKER)
    await Writer(log, "api").append([Intent(JoinTokenRotated(role="worker", token="SWMTKN-1-digest-new"))],
                                    ClusterState())
    with pytest.raises(JoinRefused, match="rotated"):
        await join(log, nodes(tmp_path / "new"), WORKER)
    await join(log, nodes(tmp_path / "old"), "")
    assert [e.event.__class__ for e in map(decode, (x.data for x in log.entries))][-1] is NodeRejoined
    await join(log, nodes(tmp_path / "new"), "SWMTKN-1-digest-new")
    assert len(joined(log)) == 2


async def test_an_agent_started_before_the_cluster_waits_for_it(tmp_path: Path) -> None:
    log = MemoryLog()
    joining = asyncio.ensure_future(join(log, nodes(tmp_path), WORKER))
    await asyncio.sleep(0.05)
    assert not joining.done() and not log.entries
    await Writer(log, "api").append([Intent(ClusterCreated(cluster_id="c", worker_token=WORKER))], ClusterState())
    await asyncio.wait_for(joining, 5)
    assert [j.spec.role for j in joined(log)] == ["worker"]


def test_tokens_compare_whole_and_exactly() -> None:
    cluster = Cluster(id="c", worker_token=WORKER, manager_token=MANAGER)
    assert role_for(cluster, MANAGER) == "manager"
    for wrong in (WORKER[:-1], WORKER + "x", WORKER.upper()):
        with pytest.raises(JoinRefused):
            role_for(cluster, wrong)


async def test_the_token_file_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "token"
    reading = asyncio.ensure_future(read_token_file(path))
    await asyncio.sleep(0.05)
    assert not reading.done()
    path.write_text(WORKER + "\n")
    assert await asyncio.wait_for(reading, 5) == WORKER


async def test_a_known_node_rejoins_without_waiting_for_a_token_file(tmp_path: Path) -> None:
    log = await cluster_log()
    await join(log, nodes(tmp_path), WORKER)
    await asyncio.wait_for(join(log, nodes(tmp_path), token_file=tmp_path / "never-written"), 5)
    assert len(joined(log)) == 1


async def test_a_new_node_reads_its_token_file(tmp_path: Path) -> None:
    log = await cluster_log()
    (tmp_path / "token").write_text(MANAGER + "\n")
    await join(log, nodes(tmp_path / "node"), token_file=tmp_path / "token")
    assert [j.spec.role for j in joined(log)] == ["manager"]
