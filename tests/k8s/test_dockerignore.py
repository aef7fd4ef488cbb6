"""The build context (.dockerignore) works for both builders the project uses: BuildKit (CI's
release.yml) and buildah (podman, `make images`), whose matcher does not re-include the contents of
a wildcard directory pattern such as `!services/*/src/`."""

from __future__ import annotations

from tests.k8s.conftest import ROOT


def test_every_service_source_tree_is_re_included_by_name() -> None:
    lines = set((ROOT / ".dockerignore").read_text().splitlines())
    members = sorted(p.parent.name for p in (ROOT / "services").glob("*/src"))
    assert members, "no services/*/src"
    missing = [m for m in members if f"!services/{m}/src/" not in lines]
    assert not missing, f".dockerignore: add `!services/<name>/src/` for {missing}"


def test_every_migration_folder_is_re_included_by_name() -> None:
    lines = set((ROOT / ".dockerignore").read_text().splitlines())
    folders = sorted({p.parent.name for p in (ROOT / "migrations").glob("*/*.sql")})
    assert folders, "no migrations/*/*.sql"
    missing = [f for f in folders if f"!migrations/{f}/*.sql" not in lines]
    assert not missing, f".dockerignore: add `!migrations/<service>/*.sql` for {missing}"
