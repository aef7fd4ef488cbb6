"""docs/clients.md agrees with what it describes: its excerpts and its pinned versions."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "clients.md").read_text()
EXCERPT = re.compile(r"<!-- excerpt: (\S+) -->\n```\w+\n(.*?)```", re.DOTALL)


def test_every_excerpt_is_in_its_file_as_printed() -> None:
    excerpts = EXCERPT.findall(DOC)
    assert len(excerpts) >= 4
    for path, code in excerpts:
        assert code in (ROOT / path).read_text(), f"docs/clients.md quotes {path} wrongly:\n{code}"


def test_the_pinned_generator_versions_are_the_ones_named() -> None:
    package = json.loads((ROOT / "clients" / "typescript" / "package.json").read_text())
    pins = package["dependencies"] | package["devDependencies"]
    for name in ("openapi-typescript", "openapi-fetch", "typescript"):
        assert f"`{name}` {pins[name]}" in DOC or f"{name}@{pins[name]}" in DOC, name
    lock = json.loads((ROOT / "clients" / "typescript" / "package-lock.json").read_text())
    locked = {
        k.removeprefix("node_modules/"): v["version"] for k, v in lock["packages"].items() if k
    }
    assert all(locked[name] == version for name, version in pins.items())  # exact pins
    workspace = tomllib.loads((ROOT / "pyproject.toml").read_text())
    python_pin = next(
        d for d in workspace["dependency-groups"]["dev"] if d.startswith("openapi-python-client")
    )
    assert f"`{python_pin}`" in DOC
    assert f"--from {python_pin}" in DOC
