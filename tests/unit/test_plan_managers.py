"""`shoal up --managers 3`: the plan and the nats-server configs it computes (pure, no processes)."""

from __future__ import annotations

import io
from pathlib import Path

from services.cli.plan import Options, cluster_config, nats_configs, plan
from services.cli.supervisor import Supervisor
from services.cli.up import banner, parse

URLS = "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"


def _options(tmp_path: Path) -> Options:
    return Options(state_dir=tmp_path, agents=2, executor="sim", managers=3, metrics_port=9500)


def test_three_servers_then_three_of_each_manager_process_then_the_agents_then_the_audit(tmp_path: Path) -> None:
    names = [s.name for s in plan(_options(tmp_path))]
    assert names == ["nats-1", "nats-2", "nats-3", "api-1", "api-2", "api-3", "orchestrator-1", "orchestrator-2",
                     "orchestrator-3", "scheduler-1", "scheduler-2", "scheduler-3", "agent-1", "agent-2", "audit"]


def test_every_process_knows_every_server_and_the_stream_is_replicated(tmp_path: Path) -> None:
    for spec in plan(_options(tmp_path)):
        if spec.name.startswith("nats"):
            continue
        argv = list(spec.argv)
        assert argv[argv.index("--nats") + 1] == URLS
        assert argv[argv.index("--replicas") + 1] == "3"


def test_each_api_listens_on_its_own_port_and_every_metrics_port_differs(tmp_path: Path) -> None:
    specs = plan(_options(tmp_path))
    addrs = [list(s.argv)[list(s.argv).index("--addr") + 1] for s in specs if s.name.startswith("api")]
    assert addrs == ["127.0.0.1:2375", "127.0.0.1:2376", "127.0.0.1:2377"]
    metrics = [s.metrics_addr for s in specs if s.metrics_addr]
    assert len(set(metrics)) == len(metrics) == 12


def test_cluster_configs_route_to_all_three_durably_with_their_own_stores(tmp_path: Path) -> None:
    configs = nats_configs(_options(tmp_path))
    assert len(configs) == 3
    conf = cluster_config(_options(tmp_path), 2)
    assert "listen: 127.0.0.1:4223" in conf and "listen: 127.0.0.1:6223" in conf
    assert all(f"nats-route://127.0.0.1:{p}" in conf for p in (6222, 6223, 6224))
    assert "sync_interval: always" in conf and str(tmp_path / "nats" / "2") in conf
    assert len({c for c in configs.values()}) == 3


def test_one_manager_keeps_the_single_server_plan(tmp_path: Path) -> None:
    assert [s.name for s in plan(Options(state_dir=tmp_path))][:4] == ["nats", "api", "orchestrator", "scheduler"]
    assert "--replicas" not in plan(Options(state_dir=tmp_path))[1].argv


def test_up_flags_and_banner_list_every_address(tmp_path: Path) -> None:
    options = parse(["--managers", "3", "--state-dir", str(tmp_path), "--nats-cluster-port", "7000"])
    assert (options.managers, options.nats_cluster_port) == (3, 7000)
    out = io.StringIO()
    print(banner(options, Supervisor(plan(options), tmp_path), True), file=out)
    text = out.getvalue()
    for addr in ("127.0.0.1:2375", "127.0.0.1:2376", "127.0.0.1:2377", "127.0.0.1:4223", "127.0.0.1:4224"):
        assert addr in text
