"""`make audit` audits the whole lock: the requirements it hands pip-audit name every third-party
package of uv.lock, pinned and hashed (pip-audit --require-hashes), and no workspace member.

The audit itself needs an advisory database, which this machine cannot reach; with --strict it
fails there instead of reporting a clean result (CI runs it: .github/workflows/ci.yml)."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

from tests.ci.conftest import ROOT


def test_the_audit_input_is_every_locked_third_party_package(tmp_path: Path) -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^audit:.*?\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe
    assert "--strict" in recipe.group(1)
    assert "--require-hashes" in recipe.group(1)
    uv = ROOT / ".tools" / "uv" / "bin" / "uv"
    out = tmp_path / "requirements.txt"
    subprocess.run(
        [
            str(uv), "export", "--frozen", "--all-packages", "--all-extras", "--all-groups",
            "--no-emit-workspace", "--quiet", "--format", "requirements-txt",
            "--output-file", str(out),
        ],
        cwd=ROOT,
        check=True,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
    )  # fmt: skip
    exported = {
        m.group(1).lower().replace("_", "-")
        for m in re.finditer(
            r"^([A-Za-z0-9_.-]+)==\S+(?: ;[^\\\n]*)? \\$", out.read_text(), re.MULTILINE
        )
    }
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    workspace = {p["name"] for p in lock["package"] if "editable" in p["source"] or
                 "virtual" in p["source"]}  # fmt: skip
    third_party = {p["name"] for p in lock["package"]} - workspace
    assert workspace >= {"portico-gateway", "portico-users", "portico-common"}
    assert exported == third_party
    assert out.read_text().count("--hash=sha256:") >= len(third_party)
