"""The agent's flags and identity: parsing, environment defaults, node ids that survive restarts."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from services.agent.config import AgentConfig, add_args, labels, memory_bytes
from services.agent.identity import engine_description, identities, node_ids
from services.kernel.placement import generic


def parse(*argv: str) -> AgentConfig:
    parser = argparse.ArgumentParser()
    add_args(parser)
    return AgentConfig.from_args(parser.parse_args(argv))


@pytest.mark.parametrize(("text", "expected"), [
    ("", {}), ("zone=a", {"zone": "a"}), ("zone=a, disk=ssd,gpu", {"zone": "a", "disk": "ssd", "gpu": ""}),
    ("k=v=w", {"k": "v=w"}),
])
def test_labels(text: str, expected: dict[str, str]) -> None:
    assert labels(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("1024", 1024), ("512M", 512 << 20), ("8g", 8 << 30), ("8GiB", 8 << 30), ("1.5k", 1536), ("2Gb", 2 << 30),
])
def test_memory_sizes(text: str, expected: int) -> None:
    assert memory_bytes(text) == expected


def test_memory_size_errors_are_argument_errors() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        memory_bytes("lots")


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = parse("--state-dir", str(tmp_path))
    assert (config.executor, config.addr, config.token, config.token_file, config.heartbeat_s, config.nodes) == (
        "process", "127.0.0.1", "", None, 1.0, 1)
    monkeypatch.setenv("SHOAL_EXECUTOR", "sim")
    monkeypatch.setenv("SHOAL_SIM_NODES", "3")
    monkeypatch.setenv("SHOAL_AGENT_LABELS", "zone=b")
    monkeypatch.setenv("SHOAL_AGENT_STATE_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("SHOAL_JOIN_TOKEN", "SWMTKN-1-a-b")
    config = parse()
    assert (config.executor, config.nodes, config.labels, config.token) == ("sim", 3, {"zone": "b"}, "SWMTKN-1-a-b")
    assert config.state_dir == tmp_path / "env"
    assert parse("--executor", "process", "--nodes", "1").executor == "process"


def test_many_nodes_need_the_sim_executor() -> None:
    with pytest.raises(ValueError, match="--executor sim"):
        parse("--executor", "process", "--nodes", "2")


def test_node_ids_are_kept_and_extended(tmp_path: Path) -> None:
    first = node_ids(tmp_path / "state", 2)
    assert node_ids(tmp_path / "state", 2) == first
    grown = node_ids(tmp_path / "state", 3)
    assert grown[:2] == first and len(set(grown)) == 3
    assert node_ids(tmp_path / "state", 1) == first[:1]
    assert (tmp_path / "state" / "node-id").read_text().split() == grown


def test_identities_describe_the_machine_or_the_simulation(tmp_path: Path) -> None:
    [real] = identities(parse("--state-dir", str(tmp_path / "p"), "--hostname", "h", "--token", "SWMTKN-1-a-b"))
    assert (real.description.hostname, real.spec.labels) == ("h", None)
    assert real.description.resources.nano_cpus >= 1_000_000_000 and real.description.resources.memory_bytes > 0
    assert real.description.platform.os == "linux" and real.description.platform.architecture
    sims = identities(parse("--state-dir", str(tmp_path / "s"), "--executor", "sim", "--nodes", "2",
                            "--hostname", "h", "--sim-cpus", "0.5", "--sim-memory", "1G", "--labels", "a=1"))
    assert [s.description.hostname for s in sims] == ["h-1", "h-2"]
    assert sims[0].description.resources.nano_cpus == 500_000_000
    assert sims[0].description.resources.memory_bytes == 1 << 30
    assert sims[0].description.engine.engine_version == "shoal-sim" and sims[0].spec.labels == {"a": "1"}


def test_generic_resources_are_advertised_on_every_sim_node(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = parse("--state-dir", str(tmp_path), "--executor", "sim", "--nodes", "2",
                   "--generic-resource", "gpu=2", "--generic-resource", "fpga=F-1")
    assert config.generic_resources == ("gpu=2", "fpga=F-1")
    for identity in identities(config):
        assert generic.units(identity.description.resources.generic_resources) == (("fpga", 1), ("gpu", 2))
    monkeypatch.setenv("SHOAL_AGENT_GENERIC_RESOURCES", "ssd=3, gpu=1")
    assert parse("--state-dir", str(tmp_path)).generic_resources == ("ssd=3", "gpu=1")
    assert parse("--state-dir", str(tmp_path), "--generic-resource", "gpu=4").generic_resources == ("gpu=4",)
    assert parse("--state-dir", str(tmp_path), "--executor", "sim").generic_resources == ("ssd=3", "gpu=1")


def test_a_malformed_generic_resource_stops_the_agent(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        parse("--state-dir", str(tmp_path), "--generic-resource", "gpu")


def test_a_docker_engines_node_generic_resources_are_the_nodes() -> None:
    info = {"GenericResources": [{"DiscreteResourceSpec": {"Kind": "gpu", "Value": 2}},
                                 {"NamedResourceSpec": {"Kind": "fpga", "Value": "F-1"}}]}
    assert generic.units(engine_description(info, "h").resources.generic_resources) == (("fpga", 1), ("gpu", 2))
    assert engine_description({"GenericResources": "not a list"}, "h").resources.generic_resources is None


def test_ingress_mode_defaults_to_auto_and_takes_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_INGRESS_MODE", raising=False)  # tests/conftest.py pins the proxy for the suite
    assert parse().ingress_mode == "auto"
    assert parse("--ingress-mode", "kernel").ingress_mode == "kernel"
    monkeypatch.setenv("SHOAL_INGRESS_MODE", "kernel")
    assert parse().ingress_mode == "kernel"
    monkeypatch.setenv("SHOAL_INGRESS_MODE", "ipvs")
    with pytest.raises(SystemExit, match="unknown ingress mode 'ipvs': use one of auto, proxy, kernel"):
        parse()
