"""The README documents every setting and every make target (so docs cannot drift silently)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from portico_auth.config import AuthSettings
from portico_common.config import MetricsSettings, TelemetrySettings
from portico_devstack.config import DevSettings
from portico_gateway.config import GatewaySettings
from portico_migrations.config import MigrateSettings
from portico_users.config import UsersSettings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def env_names(settings: type[BaseSettings]) -> list[str]:
    """Every environment variable a settings class reads (nested groups joined with ``__``)."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    names: list[str] = []

    def walk(model: type[BaseModel], path: str) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{path}{name.upper()}__")
            elif info.validation_alias is not None:
                names.append(str(info.validation_alias.choices[0]))  # type: ignore[union-attr]
            else:
                names.append(f"{path}{name.upper()}")

    walk(settings, prefix)
    return names


@pytest.mark.parametrize(
    "settings",
    [
        UsersSettings,
        AuthSettings,
        GatewaySettings,
        MigrateSettings,
        DevSettings,
        TelemetrySettings,
        MetricsSettings,
    ],
)
def test_readme_documents_every_setting(settings: type[BaseSettings]) -> None:
    missing = [name for name in env_names(settings) if f"`{name}`" not in README]
    assert not missing, f"README.md lacks {missing}"


def test_readme_lists_every_make_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = re.findall(r"^([a-z0-9-]+):.*## ", makefile, re.MULTILINE)
    assert {"run", "test", "lint", "fmt", "proto", "proto-check", "migrate", "help"} <= set(targets)
    missing = [t for t in targets if not re.search(rf"^  {re.escape(t)} ", README, re.MULTILINE)]
    assert not missing, f"README.md's make help lacks {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make run" in README
    assert "make test" in README


def test_security_threat_table_matches_the_hostile_suite() -> None:
    """Each attack class of tests/integration/hostile/ has a row in SECURITY.md's threat table,
    and each test file the table names exists."""
    security = (ROOT / "SECURITY.md").read_text()
    table = security.split("## Hostile input: threat table", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    classes = {row.split("|")[1].strip() for row in rows[1:]}
    suite = ROOT / "tests" / "integration" / "hostile"
    on_disk = {p.name for p in suite.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert on_disk <= classes, on_disk - classes
    for named in re.findall(r"`(hostile/[\w/]+\.py)`", table):
        assert (suite.parent / named).is_file(), named
    for named in re.findall(r"`(tests/[\w/]+\.py)`", table):
        assert (ROOT / named).is_file(), named
