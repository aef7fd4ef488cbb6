"""``make run OBSERVE=1``: a real Prometheus scrapes every process and loads the repo's rules."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.conftest import free_port, start_stack

#: The rule groups of observability/prometheus/rules/*.yaml (one SLO group per component).
SLO_GROUPS = {"portico-gateway-slo", "portico-users-slo", "portico-auth-slo"}
JOBS = {"gateway", "users", "auth", "audit"}


def _api(client: httpx.Client, path: str, **params: str) -> Any:
    reply = client.get(f"/api/v1/{path}", params=params)
    reply.raise_for_status()
    body = reply.json()
    assert body["status"] == "success", body
    return body["data"]


def _until(what: str, check: Any, timeout_s: float, output: list[str]) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} after {timeout_s:g} s:\n" + "\n".join(output[-40:]))
        time.sleep(0.25)


@pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="no `prometheus` binary: apt-get install --no-install-recommends prometheus "
    "(`make obs-check` installs it; CI has it)",
)
@pytest.mark.timeout(90)
def test_observe_runs_prometheus_scraping_every_process_with_the_rules(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / ".data"
    stack = start_stack(
        data, extra_env={"PORTICO_DEV_OBSERVE": "1", "PORTICO_DEV_PROMETHEUS_PORT": str(port)}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert any(line.startswith(f"portico | Prometheus {url}") for line in stack.output), (
            "\n".join(stack.output)
        )
        prometheus = next(
            c for c in stack.children() if Path(c.cmdline()[0]).name.startswith("prometheus")
        )
        with httpx.Client(base_url=url, timeout=5) as client:

            def all_up() -> list[dict[str, Any]]:
                active = _api(client, "targets", state="active")["activeTargets"]
                up = [t for t in active if t["health"] == "up"]
                return active if len(up) == len(active) == len(JOBS) else []

            targets = _until("not every target up", all_up, 30, stack.output)
            assert {t["labels"]["job"] for t in targets} == JOBS
            assert {t["labels"]["namespace"] for t in targets} == {"local"}
            # One of Portico's own series, from each process.
            query = 'portico_build_info{namespace="local"}'
            series = _api(client, "query", query=query)["result"]
            assert {s["metric"]["component"] for s in series} == JOBS, series
            groups = {g["name"] for g in _api(client, "rules")["groups"]}
            assert groups >= SLO_GROUPS, groups
            alerts = {
                r["name"] for g in _api(client, "rules", type="alert")["groups"] for r in g["rules"]
            }
            assert {"PorticoGatewayDown", "PorticoUsersDown", "PorticoAuthDown"} <= alerts
            assert "PorticoAuditDeadLetters" in alerts
    finally:
        code = stack.stop()
    assert code == 0, "\n".join(stack.output)
    assert "portico | prom stopped (exit code 0)" in stack.output, stack.output
    assert not prometheus.is_running() or prometheus.status() == psutil.STATUS_ZOMBIE
    assert (data / "prometheus" / "tsdb").is_dir()  # its data stays with the stack's
