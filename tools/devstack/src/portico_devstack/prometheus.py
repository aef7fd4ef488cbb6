"""A real Prometheus next to the local stack (``make run OBSERVE=1``), when one is installed.

It is Debian's ``prometheus`` package (the one ``make obs-check`` installs for promtool), run as
one more child of the launcher: on loopback, data in ``<data_dir>/prometheus/``, scraping every
process on the ports the launcher gave it (jobs ``gateway``, ``users``, ``auth``, the job names of
``observability/prometheus/prometheus.yaml``, with ``namespace="local"`` and ``pod`` labels as
in a cluster) and evaluating the repository's recording rules and alerts
(``observability/prometheus/rules/*.yaml``). Its configuration is written anew on every start.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Short enough to see a request on a graph a few seconds later.
SCRAPE_INTERVAL = "5s"
EVALUATION_INTERVAL = "15s"
#: The label every local series gets where a cluster's get their namespace.
NAMESPACE = "local"
INSTALL_HINT = (
    "on Debian/Ubuntu: apt-get install --no-install-recommends prometheus "
    "(`make obs-check` installs it too)"
)


@dataclass(frozen=True, slots=True)
class Target:
    """One process to scrape: its job (component) and ``host:port`` of its ``/metrics``."""

    job: str
    address: str


def rules_dir() -> Path:
    """``observability/prometheus/rules`` of the source checkout the launcher runs from."""
    return Path(__file__).resolve().parents[4] / "observability" / "prometheus" / "rules"


def find_binary(name: str) -> str | None:
    """The Prometheus server ``name`` resolves to (on PATH, or a path), or None."""
    return shutil.which(name)


def scrape_host(host: str) -> str:
    """Where to reach a process bound to ``host`` (a wildcard bind answers on loopback)."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def config(targets: Sequence[Target], rules: Sequence[Path]) -> dict[str, Any]:
    """The Prometheus configuration: one job per target, the rule files (globs allowed)."""
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": EVALUATION_INTERVAL,
        },
        "rule_files": [str(r) for r in rules],
        "scrape_configs": [
            {
                "job_name": t.job,
                "metrics_path": "/metrics",
                "static_configs": [
                    {"targets": [t.address], "labels": {"namespace": NAMESPACE, "pod": t.job}}
                ],
            }
            for t in targets
        ],
    }


def write_config(data_dir: Path, targets: Sequence[Target], rules: Sequence[Path]) -> Path:
    """Write ``prometheus.yaml`` (JSON, which is YAML) into ``data_dir``; return its path."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "prometheus.yaml"
    header = "# Written by portico-dev (make run OBSERVE=1) on every start: edits are lost.\n"
    path.write_text(header + json.dumps(config(targets, rules), indent=2) + "\n")
    return path


def argv(binary: str, *, config_file: Path, data_dir: Path, listen: str) -> list[str]:
    """The server's command line: loopback, TSDB in ``data_dir/tsdb``, exemplars kept."""
    return [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir / 'tsdb'}",
        "--storage.tsdb.retention.time=7d",
        f"--web.listen-address={listen}",
        "--enable-feature=exemplar-storage",
        "--log.level=warn",  # its start-up chatter would drown the services' lines
    ]
