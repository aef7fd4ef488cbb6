"""The documentation agrees with the code, so it cannot drift silently.

* ``docs/configuration.md`` names every setting of every component, in that component's section,
  with the default the settings class really has (a default written as code, in backticks, is
  compared with the class's; ``(required)`` must be a required field);
* ``docs/contributing.md`` lists every make target;
* every relative link in the Markdown pages points at a file of the repository, and every
  ``#anchor`` at a heading of the page it names;
* README.md stays a front door (at most 250 lines), and no file refers to a style guide that is
  not in the repository.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from portico_audit.config import AuditSettings
from portico_auth.config import AuthSettings
from portico_common.config import MetricsSettings, SessionStoreSettings, TelemetrySettings
from portico_devstack.config import DevSettings
from portico_gateway.config import GatewaySettings
from portico_migrations.config import MigrateSettings
from portico_users.config import UsersSettings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"

#: The section of docs/configuration.md (its ``## `` heading) that documents each class.
SECTIONS: dict[type[BaseSettings], str] = {
    SessionStoreSettings: "Every process that checks tokens",
    TelemetrySettings: "Telemetry (every process)",
    MetricsSettings: "Telemetry (every process)",
    UsersSettings: "Users service",
    AuthSettings: "Auth service",
    AuditSettings: "Audit service",
    GatewaySettings: "Gateway",
    MigrateSettings: "Migrations",
    DevSettings: "Local stack",
}


@dataclass(frozen=True)
class Setting:
    """One environment variable a settings class reads."""

    name: str
    aliases: tuple[str, ...]
    required: bool
    #: The default as the documentation writes it, or None when it has none worth writing
    #: (``None`` itself, an empty list, a value computed at start-up).
    default: str | None


def _shown(value: Any) -> str | None:
    """``value`` as docs/configuration.md writes a default (in backticks)."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None or value == [] or value == ():
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def settings_of(settings: type[BaseSettings]) -> list[Setting]:
    """Every environment variable ``settings`` reads (nested groups joined with ``__``)."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    found: list[Setting] = []

    def walk(model: type[BaseModel], path: str) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{path}{name.upper()}__")
                continue
            if info.validation_alias is not None:
                choices = tuple(str(c) for c in info.validation_alias.choices)  # type: ignore[union-attr]
            else:
                choices = (f"{path}{name.upper()}",)
            default = None if info.default is PydanticUndefined else _shown(info.default)
            found.append(Setting(choices[0], choices[1:], info.is_required(), default))

    walk(settings, prefix)
    return found


def sections(text: str) -> dict[str, str]:
    """``## `` heading → the text under it (up to the next ``## ``)."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def rows(section: str) -> dict[str, str]:
    """Each variable a table row names in its first column → that row's default cell.

    A row may name several variables (```A` / `B``, ```A` or `B``); its default cell then holds
    one default per variable, in the same order, separated by `` / ``.
    """
    found: dict[str, str] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        defaults = cells[1].split(" / ") if len(names) > 1 else [cells[1]]
        if len(defaults) != len(names):  # one shared default cell, e.g. "(none)"
            defaults = [cells[1]] * len(names)
        for name, default in zip(names, defaults, strict=True):
            found[name] = default.strip()
    return found


@pytest.mark.parametrize("settings", list(SECTIONS), ids=lambda s: s.__name__)
def test_configuration_documents_every_setting_with_its_default(
    settings: type[BaseSettings],
) -> None:
    heading = SECTIONS[settings]
    documented = rows(sections(CONFIGURATION.read_text())[heading])
    problems: list[str] = []
    for setting in settings_of(settings):
        cell = documented.get(setting.name)
        if cell is None:
            problems.append(f"{setting.name}: no row")
            continue
        if setting.required != (cell == "(required)"):
            problems.append(f"{setting.name}: required is {setting.required}, the page says {cell}")
        code = re.fullmatch(r"`([^`]*)`", cell)
        if code and code.group(1) != setting.default:
            problems.append(f"{setting.name}: default {setting.default!r}, the page says {cell}")
        for alias in setting.aliases:
            if f"`{alias}`" not in sections(CONFIGURATION.read_text())[heading]:
                problems.append(f"{setting.name}: its alias {alias} is not mentioned")
    assert not problems, f"docs/configuration.md, section {heading!r}: {problems}"


def test_configuration_names_no_setting_that_does_not_exist() -> None:
    text = sections(CONFIGURATION.read_text())
    for heading in text:  # a section no settings class maps to may name none
        known = {
            name
            for settings, where in SECTIONS.items()
            if where == heading
            for s in settings_of(settings)
            for name in (s.name, *s.aliases)
        }
        stale = set(rows(text[heading])) - known
        assert not stale, f"docs/configuration.md, section {heading!r}, names {stale}"


def test_the_row_parser_reads_defaults_per_variable() -> None:
    table = (
        "| `A` / `B` | `1` / `10` | two |\n"
        "| `C` or `D` | (required) | aliases |\n"
        "| `E` | (none) | none |\n"
    )
    assert rows(table) == {
        "A": "`1`",
        "B": "`10`",
        "C": "(required)",
        "D": "(required)",
        "E": "(none)",
    }
    assert _shown(0.25) == "0.25"
    assert _shown(60.0) == "60"
    assert _shown(SecretStr("redis://x")) == "redis://x"
    assert _shown(False) == "false"


def test_contributing_lists_every_make_target() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = re.findall(r"^([a-z0-9-]+):.*## ", makefile, re.MULTILINE)
    assert {"run", "test", "lint", "fmt", "proto", "proto-check", "migrate", "help"} <= set(targets)
    page = (ROOT / "docs" / "contributing.md").read_text()
    missing = [t for t in targets if not re.search(rf"^  {re.escape(t)} ", page, re.MULTILINE)]
    assert not missing, f"docs/contributing.md's make help lacks {missing}"
    listed = re.findall(r"^  ([a-z0-9-]+) {2,}", page, re.MULTILINE)
    assert set(listed) <= set(targets), f"no such make target: {set(listed) - set(targets)}"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = README.read_text()
    assert "make run" in readme
    assert "make test" in readme


def test_the_readme_is_a_front_door() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert "```mermaid" in text  # the architecture diagram
    assert (ROOT / "docs" / "README.md").is_file()


# ------------------------------------------------------------------------------ links


def markdown_pages() -> list[Path]:
    return [
        README,
        ROOT / "SECURITY.md",
        ROOT / "tests" / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
    ]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    seen: dict[str, int] = {}
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_the_anchor_rule_matches_githubs() -> None:
    assert slug("Locally: `make run OBSERVE=1`") == "locally-make-run-observe1"
    assert slug("SLOs, error budgets and alerts") == "slos-error-budgets-and-alerts"
    assert slug("2. Kubernetes: CloudNativePG backups") == "2-kubernetes-cloudnativepg-backups"


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken: list[str] = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        if not resolved.exists() or ROOT not in (resolved, *resolved.parents):
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_no_file_refers_to_a_style_guide_outside_the_repository() -> None:
    name = "STYLE" + ".md"  # spelled apart so that this test does not find itself
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    citing = []
    for file in filter(None, files):
        path = ROOT / file.decode()
        if (
            path.is_file()
            and path.stat().st_size < 2_000_000
            and name.encode() in path.read_bytes()
        ):
            citing.append(file.decode())
    assert not citing, f"these files cite a {name} that is not in the repository: {citing}"


#: The numbered items of issue 14 (hardening), each answered by a row of the threat table.
HARDENING_ITEMS = set(range(1, 13))


def test_security_threat_table_matches_the_hostile_suite() -> None:
    """Each attack class of tests/integration/hostile/ has a row in SECURITY.md's threat table,
    each item of issue 14 a row, each test file of the suite a mention, and each test file the
    table names exists."""
    security = (ROOT / "SECURITY.md").read_text()
    table = security.split("## Hostile input: threat table", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert [c.strip() for c in rows[0].split("|")[1:3]] == ["Class", "Item"], rows[0]
    classes = {row.split("|")[1].strip() for row in rows[1:]}
    items = {int(n) for row in rows[1:] for n in re.findall(r"\b\d+\b", row.split("|")[2])}
    assert items == HARDENING_ITEMS, sorted(HARDENING_ITEMS ^ items)
    suite = ROOT / "tests" / "integration" / "hostile"
    on_disk = {p.name for p in suite.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert on_disk <= classes, on_disk - classes
    named = set(re.findall(r"`(hostile/[\w/]+\.py)`", table))
    for file in named:
        assert (suite.parent / file).is_file(), file
    unnamed = {str(p.relative_to(suite.parent)) for p in suite.glob("*/test_*.py")} - named
    assert not unnamed, f"SECURITY.md's threat table does not name: {sorted(unnamed)}"
    for file in re.findall(r"`(tests/[\w/]+\.py)`", table):
        assert (ROOT / file).is_file(), file


def test_the_deployment_page_names_every_application_in_its_wave() -> None:
    """docs/deployment.md walks an operator through every Argo CD Application, in sync order."""
    page = (ROOT / "docs" / "deployment.md").read_text()
    rows = {
        name: wave for wave, name in re.findall(r"^\| (-?\d+) \| `([\w-]+)` ", page, re.MULTILINE)
    }
    found = 0
    for path in sorted((ROOT / "argocd").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") != "Application":
                continue
            meta = doc["metadata"]
            wave = meta.get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0")
            if path.name == "root.yaml":
                continue  # the root app itself, applied by hand in step 1
            found += 1
            assert rows.get(meta["name"]) == wave, (path, meta["name"], wave)
    assert found >= 10
