"""One source, two consumers: the PrometheusRules the cluster loads are the rule files promtool
tests (``observability/prometheus/render_rules.py`` writes them; kustomize ships them)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.observability.catalog import OBSERVABILITY, RULES, load_yaml, load_yaml_documents

GENERATED = OBSERVABILITY / "prometheus" / "prometheus-rules.yaml"
SCRIPT = OBSERVABILITY / "prometheus" / "render_rules.py"


def test_every_rule_file_is_one_prometheus_rule_with_the_file_as_its_spec() -> None:
    objects = {d["metadata"]["name"]: d for d in load_yaml_documents(GENERATED)}
    files = {f"portico-{p.stem}": p for p in RULES.glob("*.yaml")}
    assert set(objects) == set(files)
    for name, path in files.items():
        rule = objects[name]
        assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
        assert rule["spec"] == load_yaml(path), f"{name} differs from {path.name}"


def renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_rules", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_file_is_fresh_and_the_check_can_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = subprocess.run([sys.executable, str(SCRIPT), "--check"], check=False)
    assert fresh.returncode == 0, "run `make obs-rules` and commit prometheus-rules.yaml"
    module = renderer()
    stale = tmp_path / "prometheus-rules.yaml"
    stale.write_text(module.render().replace("severity: page", "severity: ticket", 1))
    monkeypatch.setattr(module, "OUTPUT", stale)
    assert module.main(["--check"]) == 1


def test_the_observability_kustomization_ships_the_rule_objects() -> None:
    assert (
        "prometheus/prometheus-rules.yaml"
        in load_yaml(OBSERVABILITY / "kustomization.yaml")["resources"]
    )
