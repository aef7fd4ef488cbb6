"""Rendered manifests for the consistency tests: ``kubectl kustomize`` per overlay, parsed to JSON.

YAML is parsed by the k8s tools venv (``.tools/k8s``, installed by ``make k8s-check``), so the
project's locked venv needs no YAML library.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "staging", "prod")
TOOLS = Path(os.environ.get("PORTICO_K8S_TOOLS", ROOT / ".tools" / "k8s"))
TOOLS_PYTHON = TOOLS / "bin" / "python"
_TO_JSON = (
    "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)"
)

Manifest = dict[str, Any]


def yaml_to_json(text: str) -> list[Manifest]:
    """Every document of a YAML stream."""
    if not TOOLS_PYTHON.exists():
        pytest.fail(f"{TOOLS_PYTHON} is missing: run `make k8s-check` (it installs its tools)")
    out = subprocess.run(
        [str(TOOLS_PYTHON), "-c", _TO_JSON], input=text, capture_output=True, text=True, check=True
    ).stdout
    docs: list[Manifest] = json.loads(out)
    return docs


def render(overlay: str) -> list[Manifest]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is required (kustomize is built in): it renders the overlays")
    text = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return yaml_to_json(text)


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Manifest]]:
    return {overlay: render(overlay) for overlay in OVERLAYS}


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Manifest], kind: str, name: str) -> Manifest:
    (doc,) = (d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
    return doc


@pytest.fixture(params=OVERLAYS)
def docs(request: pytest.FixtureRequest, rendered: dict[str, list[Manifest]]) -> list[Manifest]:
    """One overlay's documents (a test taking ``docs`` runs once per overlay)."""
    result: list[Manifest] = rendered[request.param]
    return result


def pod_template(workload: Manifest) -> Any:
    return workload["spec"]["template"]["spec"]


def config_of(docs: list[Manifest], deployment: Manifest) -> dict[str, str]:
    """The ConfigMap the Deployment's first container loads with envFrom."""
    (ref,) = pod_template(deployment)["containers"][0]["envFrom"]
    data: dict[str, str] = one(docs, "ConfigMap", ref["configMapRef"]["name"])["data"]
    return data
