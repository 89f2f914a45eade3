"""`shoal up --monitoring`: a real Prometheus scraping every process, with Shoal's alert rules.

The scrape config is computed from the same plan `shoal up` runs, so its targets are exactly the
processes' metrics addresses; the rules are `deploy/prometheus/alerts.yml`, the file operators load.
Prometheus is Debian's `prometheus` package: found on PATH, installed when running as root, and
otherwise named in a message that says how to get it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from services.cli.plan import STOP_CONTROL, Options, ProcessSpec

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
PACKAGE = "prometheus"


class Missing(RuntimeError):
    """Prometheus is not installed and cannot be installed from here."""


def job(spec: ProcessSpec) -> str:
    """The job label of a process: its kind (`agent-2` is an `agent`), as in deploy/prometheus."""
    return spec.name.split("-")[0]


def scrape_config(specs: Sequence[ProcessSpec], rules: Path = RULES, interval: str = "5s") -> str:
    """prometheus.yml for these processes. JSON is YAML, and cannot be mis-indented."""
    jobs: dict[str, list[str]] = {}
    for spec in specs:
        if spec.metrics_addr:
            jobs.setdefault(job(spec), []).append(spec.metrics_addr)
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": name, "static_configs": [{"targets": targets}]}
                           for name, targets in jobs.items()],
    }
    return json.dumps(config, indent=2) + "\n"


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise Missing("Prometheus is not installed: `sudo apt-get install prometheus` (Debian), then retry")
    subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
    done = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", PACKAGE],
                          capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    found = shutil.which("prometheus")
    if done.returncode != 0 or found is None:
        raise Missing(f"apt-get install {PACKAGE} failed: {done.stderr.decode(errors='replace')[-500:]}")
    return found


def prometheus_argv(binary: str, config: Path, data_dir: Path, listen: str) -> tuple[str, ...]:
    return (binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address={listen}", "--storage.tsdb.retention.time=7d")


def prometheus_url(options: Options) -> str:
    return f"http://127.0.0.1:{options.prometheus_port}"


def prepare(options: Options, specs: Sequence[ProcessSpec]) -> ProcessSpec:
    """Write the scrape config for `specs` under the state dir; the Prometheus process to run."""
    if not RULES.is_file():
        raise Missing(f"Shoal's alert rules are not at {RULES}: run `shoal up --monitoring` from a Shoal checkout")
    workdir = options.state_dir / "prometheus"
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(scrape_config(specs))
    argv = prometheus_argv(prometheus_binary(), config, workdir / "data", f"127.0.0.1:{options.prometheus_port}")
    return ProcessSpec("prometheus", argv, STOP_CONTROL)
