"""``make run OBSERVE=1``'s Prometheus: what it scrapes, that promtool accepts it, and no failure
when none is installed (the e2e tier runs the real one: tests/e2e/test_observe.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from portico_devstack import prometheus
from portico_devstack.__main__ import _parser
from portico_devstack.config import DevSettings
from portico_devstack.launcher import Stack


def _settings(**overrides: object) -> DevSettings:
    return DevSettings().model_copy(update=overrides)


def test_every_process_is_a_target_on_the_launchers_ports() -> None:
    stack = Stack(_settings(host="0.0.0.0", gateway_port=8100, users_metrics_port=9201))
    targets = stack._scrape_targets()
    assert [(t.job, t.address) for t in targets] == [
        ("gateway", "127.0.0.1:8100"),  # a wildcard bind is scraped on loopback
        ("users", "127.0.0.1:9201"),
        ("auth", "127.0.0.1:9102"),
        ("audit", "127.0.0.1:9103"),
    ]
    jobs = prometheus.config(targets, [])["scrape_configs"]
    assert [j["job_name"] for j in jobs] == ["gateway", "users", "auth", "audit"]  # cluster names
    assert all(j["static_configs"][0]["labels"]["namespace"] == "local" for j in jobs)


def test_a_process_without_metrics_is_not_scraped() -> None:
    stack = Stack(_settings(auth_metrics_port=0, audit_metrics_port=0))
    assert [t.job for t in stack._scrape_targets()] == ["gateway", "users"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool: `make obs-check`")
def test_promtool_accepts_the_config_with_the_repos_rules(tmp_path: Path) -> None:
    targets = Stack(_settings())._scrape_targets()
    rules = prometheus.rules_dir()
    assert sorted(p.name for p in rules.glob("*.yaml")) == [
        "audit.yaml",
        "auth.yaml",
        "gateway.yaml",
        "postgres.yaml",
        "users.yaml",
        "valkey.yaml",
    ]
    path = prometheus.write_config(tmp_path, targets, [rules / "*.yaml"])
    done = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rule files found" in done.stdout, done.stdout
    for name in ("auth", "gateway", "users", "valkey"):  # each file checked, and not empty
        assert f"Checking {rules / name}.yaml\n  SUCCESS: " in done.stdout, done.stdout


async def test_without_a_prometheus_the_stack_says_so_and_goes_on(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    stack = Stack(
        _settings(observe=True, prometheus_binary="no-such-prometheus", data_dir=tmp_path)
    )
    await stack._start_prometheus({})
    assert stack.prometheus_url is None
    assert stack.children == []
    assert "no Prometheus server ('no-such-prometheus' is not installed" in stack.prometheus_note
    assert "apt-get install --no-install-recommends prometheus" in capsys.readouterr().out


def test_the_switch_is_an_option_and_a_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _parser(DevSettings()).parse_args(["--observe"]).observe is True
    monkeypatch.setenv("PORTICO_DEV_OBSERVE", "1")
    defaults = DevSettings()
    assert defaults.observe is True
    assert _parser(defaults).parse_args(["--no-observe"]).observe is False
