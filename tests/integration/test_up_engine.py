"""`shoal up` picks docker where an engine answers and passes the engine on to every agent."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from services.cli.engine import choose, default_engine
from services.cli.plan import Options, plan
from services.cli.up import parse

pytestmark = pytest.mark.integration


async def test_no_executor_means_docker_when_the_engine_answers(tmp_path: Path, engine: str) -> None:
    options, why = await choose(Options(state_dir=tmp_path, executor="", engine=engine))
    assert options.executor == "docker" and why == f"executor docker: the engine at {engine} answers"


async def test_no_executor_means_process_when_no_engine_answers(tmp_path: Path) -> None:
    nowhere = f"unix://{tmp_path}/no-docker.sock"
    options, why = await choose(Options(state_dir=tmp_path, executor="", engine=nowhere))
    assert options.executor == "process" and f"no Docker engine answers at {nowhere}" in why


async def test_an_executor_asked_for_is_kept(tmp_path: Path) -> None:
    options, why = await choose(Options(state_dir=tmp_path, executor="docker", engine="tcp://127.0.0.1:1"))
    assert options.executor == "docker" and why == "executor docker on tcp://127.0.0.1:1 (as asked)"


def test_engine_comes_from_the_flag_or_shoal_docker_host_never_docker_host(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    monkeypatch.delenv("SHOAL_DOCKER_HOST", raising=False)
    assert default_engine() == "unix:///var/run/docker.sock"
    monkeypatch.setenv("SHOAL_DOCKER_HOST", "unix:///run/other.sock")
    assert parse(["--state-dir", str(tmp_path)]).engine == "unix:///run/other.sock"
    options = parse(["--state-dir", str(tmp_path), "--executor", "docker", "--engine", "tcp://10.0.0.5:2376",
                     "--agents", "3"])
    assert (options.executor, options.engine) == ("docker", "tcp://10.0.0.5:2376")
    agents = [s.argv for s in plan(options) if s.name.startswith("agent-")]
    assert len(agents) == 3
    assert all(" --executor docker " in " ".join(a) and a[-2:] == ("--engine", "tcp://10.0.0.5:2376") for a in agents)
    assert "--engine" not in plan(replace(options, executor="process"))[-1].argv
