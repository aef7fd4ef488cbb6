"""The migration runner against a real PostgreSQL: apply, re-run, refuse, lock."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from portico_migrations.__main__ import main as cli
from portico_migrations.config import default_migrations_dir
from portico_migrations.runner import LOCK_KEY, MigrationError, MigrationFailed, migrate, status


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "migrations"
    for name, sql in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sql)
    return root


async def _fresh(database_url: str) -> str:
    """The test database with the project's migrations dropped again, for a blank slate."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "DROP SCHEMA users CASCADE; DROP SCHEMA auth CASCADE; DROP SCHEMA audit CASCADE;"
            " DROP SCHEMA portico_migrations CASCADE"
        )
    finally:
        await conn.close()
    return database_url


async def test_project_migrations_apply_to_an_empty_database_and_rerun_is_a_noop(
    database_url: str,
) -> None:
    dsn = await _fresh(database_url)
    applied = await migrate(dsn=dsn, root=default_migrations_dir())
    assert [m.label for m in applied] == [
        "audit/0001_create_events.sql",
        "audit/0002_grant_service_role.sql",
        "auth/0001_create_credentials.sql",
        "auth/0002_create_outbox.sql",
        "auth/0003_grant_service_role.sql",
        "users/0001_create_users.sql",
        "users/0002_create_outbox.sql",
        "users/0003_grant_service_role.sql",
    ]
    assert await migrate(dsn=dsn, root=default_migrations_dir()) == []
    conn = await asyncpg.connect(dsn)
    try:
        indexes = {r["indexname"] for r in await conn.fetch("SELECT indexname FROM pg_indexes")}
    finally:
        await conn.close()
    assert {"users_email_lower_key", "users_created_at_id_idx"} <= indexes
    assert {"credentials_email_lower_key", "credentials_pending_idx"} <= indexes


async def test_edited_applied_file_is_refused_with_a_clear_message(
    database_url: str, tmp_path: Path
) -> None:
    dsn = await _fresh(database_url)
    root = _tree(tmp_path, {"demo/0001_one.sql": "CREATE TABLE demo_one (id int);"})
    await migrate(dsn=dsn, root=root)
    (root / "demo/0001_one.sql").write_text("CREATE TABLE demo_one (id bigint);")
    (root / "demo/0002_two.sql").write_text("CREATE TABLE demo_two (id int);")
    with pytest.raises(MigrationError, match=r"demo/0001_one.sql was changed after it was applied"):
        await migrate(dsn=dsn, root=root)
    conn = await asyncpg.connect(dsn)
    try:  # nothing of the run was applied
        assert await conn.fetchval("SELECT to_regclass('demo_two')") is None
    finally:
        await conn.close()


async def test_missing_applied_file_and_out_of_order_file_are_refused(
    database_url: str, tmp_path: Path
) -> None:
    dsn = await _fresh(database_url)
    root = _tree(
        tmp_path,
        {"demo/0001_one.sql": "SELECT 1;", "demo/0003_three.sql": "SELECT 3;"},
    )
    await migrate(dsn=dsn, root=root)
    (root / "demo/0002_two.sql").write_text("SELECT 2;")
    with pytest.raises(MigrationError, match="numbered below the applied version 0003"):
        await migrate(dsn=dsn, root=root)
    (root / "demo/0002_two.sql").unlink()
    (root / "demo/0003_three.sql").unlink()
    with pytest.raises(MigrationError, match=r"0003_three\.sql was applied but is not on disk"):
        await migrate(dsn=dsn, root=root)


async def test_failing_file_rolls_back_alone_and_later_run_resumes(
    database_url: str, tmp_path: Path
) -> None:
    dsn = await _fresh(database_url)
    root = _tree(
        tmp_path,
        {
            "demo/0001_ok.sql": "CREATE TABLE demo_ok (id int);",
            "demo/0002_bad.sql": "CREATE TABLE demo_bad (id int); SELECT nope FROM demo_ok;",
        },
    )
    with pytest.raises(MigrationFailed, match=r"demo/0002_bad\.sql"):
        await migrate(dsn=dsn, root=root)
    assert [state for _, state in await status(dsn=dsn, root=root)] == ["applied", "pending"]
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('demo_bad')") is None
    finally:
        await conn.close()
    (root / "demo/0002_bad.sql").write_text("CREATE TABLE demo_bad (id int);")
    assert [m.version for m in await migrate(dsn=dsn, root=root)] == [2]


async def test_concurrent_runners_apply_each_file_once(database_url: str, tmp_path: Path) -> None:
    dsn = await _fresh(database_url)
    root = _tree(
        tmp_path,
        {
            "demo/0001_slow.sql": "SELECT pg_sleep(0.3); CREATE TABLE demo_slow (id int);",
            "demo/0002_next.sql": "CREATE TABLE demo_next (id int);",
        },
    )
    results = await asyncio.gather(*(migrate(dsn=dsn, root=root) for _ in range(3)))
    assert sorted(len(r) for r in results) == [0, 0, 2]
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM portico_migrations.applied")
    finally:
        await conn.close()
    assert rows == 2


async def test_runner_gives_up_when_the_lock_stays_taken(database_url: str, tmp_path: Path) -> None:
    root = _tree(tmp_path, {"demo/0001_one.sql": "SELECT 1;"})
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        with pytest.raises(MigrationError, match="held the lock"):
            await migrate(dsn=database_url, root=root, lock_timeout_s=0.5)
    finally:
        await holder.close()


def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    from portico_migrations.runner import discover

    root = _tree(tmp_path, {"demo/1_One.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match=r"NNNN_snake_name\.sql"):
        discover(root)


async def test_cli_status_and_up(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = await _fresh(database_url)
    root = _tree(tmp_path, {"demo/0001_one.sql": "SELECT 1;"})
    shutil.copytree(default_migrations_dir() / "users", root / "users")
    args = ["--database-url", dsn, "--dir", str(root)]
    assert await asyncio.to_thread(cli, ["status", *args]) == 0
    assert "pending  demo/0001_one.sql" in capsys.readouterr().out
    assert await asyncio.to_thread(cli, ["up", *args]) == 0
    assert await asyncio.to_thread(cli, ["status", *args]) == 0
    assert "applied  users/0001_create_users.sql" in capsys.readouterr().out
    (root / "demo/0001_one.sql").write_text("SELECT 2;")
    assert await asyncio.to_thread(cli, ["up", *args]) == 2
    assert "was changed after it was applied" in capsys.readouterr().err
