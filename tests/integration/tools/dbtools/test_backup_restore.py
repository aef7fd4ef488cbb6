"""``portico-db`` against a real PostgreSQL: back up, destroy, restore, and prove it.

Data is written by the real repositories (users, then their activated credentials); the proof is
the fingerprint (rows and checksum per table, schema) taken independently before and after, the
migrations' bookkeeping and ``portico-migrate status``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import asyncpg
import pytest

from portico_auth.repository import CredentialRepository
from portico_dbtools.backup import BackupResult, backup
from portico_dbtools.errors import DbToolError, RefusedError, VerificationError
from portico_dbtools.manifest import manifest_path, sha256_file
from portico_dbtools.pgtools import PgTool, find_tool
from portico_dbtools.restore import fingerprint_of, restore
from portico_dbtools.target import database_name, libpq, redact
from portico_migrations.config import default_migrations_dir
from portico_migrations.runner import discover, status
from portico_users.repository import UserRepository
from tests.integration.conftest import with_database

pytestmark = pytest.mark.timeout(60)

USERS = 3


@pytest.fixture
async def seeded(database_url: str) -> str:
    """The test database with users and their active credentials, written by the repositories."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        users = UserRepository(pool, query_timeout_s=5)
        credentials = CredentialRepository(pool, query_timeout_s=5)
        for n in range(USERS):
            email = f"backup-{n}@example.com"
            pending = await credentials.insert_pending(
                email=email,
                display_name=f"Backup {n}",
                password_hash=f"$argon2id$v=19$m=65536,t=3,p=4$not-a-real-hash-{n}",
                idempotency_key=uuid.uuid4(),
            )
            assert pending is not None
            user = await users.create_user(email=email, display_name=f"Backup {n}")
            assert await credentials.activate(pending, user_id=user.id)
        # One more pending sign-up: a row the services never read back, restored all the same.
        await credentials.insert_pending(
            email="pending@example.com",
            display_name="Pending",
            password_hash="$argon2id$pending",
            idempotency_key=uuid.uuid4(),
        )
    finally:
        await pool.close()
    return database_url


async def _sql(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _databases(admin_dsn: str, like: str) -> list[str]:
    conn = await asyncpg.connect(admin_dsn)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1", like)
    finally:
        await conn.close()
    return sorted(r["datname"] for r in rows)


async def _back_up(dsn: str, tmp_path: Path) -> BackupResult:
    return await backup(dsn=dsn, out=None, backups_dir=tmp_path / "backups")


@pytest.mark.parametrize("destroy", ["schemas", "database"])
async def test_backup_destroy_restore_gives_back_every_row_and_the_schema(
    seeded: str, postgres_admin_dsn: str, tmp_path: Path, destroy: str
) -> None:
    before = await fingerprint_of(seeded)
    result = await _back_up(seeded, tmp_path)

    assert result.dump.name.startswith("portico-")
    assert result.dump.suffix == ".dump"
    assert result.manifest_path == manifest_path(result.dump)
    assert result.manifest.fingerprint == before
    assert before.tables["users.users"].rows == USERS
    assert before.tables["auth.credentials"].rows == USERS + 1
    assert before.tables["portico_migrations.applied"].rows == len(
        discover(default_migrations_dir())
    )
    assert before.tables["users.outbox"].rows == USERS  # user.created, in the same transactions
    assert before.tables["auth.outbox"].rows == USERS  # credential.created
    recorded = json.loads(result.manifest_path.read_text())
    assert recorded["dump_sha256"] == sha256_file(result.dump)[0]
    assert recorded["pg_dump_major"] >= 13
    assert sorted(p.name for p in result.dump.parent.iterdir()) == sorted(
        [result.dump.name, result.manifest_path.name]
    ), "no temporary file left behind"

    if destroy == "schemas":
        await _sql(
            seeded,
            "DROP SCHEMA users CASCADE",
            "DROP SCHEMA auth CASCADE",
            "DROP SCHEMA audit CASCADE",
            "DROP SCHEMA portico_migrations CASCADE",
        )
    else:
        await _sql(postgres_admin_dsn, f'DROP DATABASE "{database_name(seeded)}" WITH (FORCE)')

    restored = await restore(dump=result.dump, dsn=seeded, yes=False)

    assert restored.database == database_name(seeded)
    assert restored.previous is None  # the destroyed database held no rows: not kept
    after = await fingerprint_of(seeded)
    assert after == before
    assert after.tables["users.users"].rows == USERS
    assert after.tables["auth.credentials"].rows == USERS + 1
    assert all(
        state == "applied" for _, state in await status(dsn=seeded, root=default_migrations_dir())
    )
    leftovers = await _databases(postgres_admin_dsn, f"{database_name(seeded)}_%")
    assert leftovers == []
    # The services' own queries work on the restored data.
    pool = await asyncpg.create_pool(seeded, min_size=1, max_size=1)
    try:
        credential = await CredentialRepository(pool, query_timeout_s=5).by_email(
            "backup-1@example.com"
        )
        assert credential is not None
        assert credential.user_id is not None
        user = await UserRepository(pool, query_timeout_s=5).get_user(user_id=credential.user_id)
        assert user.email == "backup-1@example.com"
    finally:
        await pool.close()


async def test_restore_refuses_a_database_with_rows_unless_yes_and_keeps_the_old_one(
    seeded: str, postgres_admin_dsn: str, tmp_path: Path
) -> None:
    result = await _back_up(seeded, tmp_path)
    await _sql(seeded, "INSERT INTO users.users (email, display_name) VALUES ('late@x.io', 'Late')")
    changed = await fingerprint_of(seeded)

    with pytest.raises(RefusedError, match=r"not empty .*users\.users.*--yes"):
        await restore(dump=result.dump, dsn=seeded, yes=False)
    assert await fingerprint_of(seeded) == changed, "a refused restore changes nothing"

    restored = await restore(dump=result.dump, dsn=seeded, yes=True)

    assert await fingerprint_of(seeded) == result.manifest.fingerprint
    assert restored.previous is not None
    kept = with_database(postgres_admin_dsn, restored.previous)
    try:
        assert await fingerprint_of(kept) == changed, "the replaced database is kept as it was"
    finally:
        await _sql(postgres_admin_dsn, f'DROP DATABASE "{restored.previous}" WITH (FORCE)')


async def test_a_damaged_dump_is_refused_before_anything_changes(
    seeded: str, postgres_admin_dsn: str, tmp_path: Path
) -> None:
    result = await _back_up(seeded, tmp_path)
    data = bytearray(result.dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    result.dump.write_bytes(bytes(data))
    before = await fingerprint_of(seeded)

    with pytest.raises(RefusedError, match="damaged") as refused:
        await restore(dump=result.dump, dsn=seeded, yes=True)

    assert refused.value.exit_code == 2
    assert await fingerprint_of(seeded) == before
    assert await _databases(postgres_admin_dsn, f"{database_name(seeded)}_%") == []


async def test_a_dump_pg_restore_cannot_read_fails_cleanly_and_leaves_the_target(
    seeded: str, postgres_admin_dsn: str, tmp_path: Path
) -> None:
    # Damaged before its manifest was written (the checksum matches the damage): pg_restore
    # itself fails half-way, inside its single transaction, in the throw-away database.
    result = await _back_up(seeded, tmp_path)
    data = result.dump.read_bytes()
    result.dump.write_bytes(data[: len(data) * 2 // 3])
    manifest = json.loads(result.manifest_path.read_text())
    manifest["dump_sha256"], manifest["dump_bytes"] = sha256_file(result.dump)
    result.manifest_path.write_text(json.dumps(manifest))
    before = await fingerprint_of(seeded)

    with pytest.raises(DbToolError, match="pg_restore failed") as failed:
        await restore(dump=result.dump, dsn=seeded, yes=True)

    assert failed.value.exit_code == 1
    assert "was not touched" in str(failed.value)
    assert await fingerprint_of(seeded) == before
    assert await _databases(postgres_admin_dsn, f"{database_name(seeded)}_%") == []


async def test_a_restore_that_does_not_match_the_manifest_is_not_swapped_in(
    seeded: str, postgres_admin_dsn: str, tmp_path: Path
) -> None:
    result = await _back_up(seeded, tmp_path)
    manifest = json.loads(result.manifest_path.read_text())
    manifest["fingerprint"]["tables"]["users.users"]["rows"] = USERS + 5
    manifest["fingerprint"]["tables"]["auth.credentials"]["md5"] = "0" * 32
    result.manifest_path.write_text(json.dumps(manifest))
    await _sql(seeded, "DELETE FROM auth.credentials WHERE state = 'pending'")
    before = await fingerprint_of(seeded)

    with pytest.raises(VerificationError) as mismatch:
        await restore(dump=result.dump, dsn=seeded, yes=True)

    assert mismatch.value.exit_code == 3
    assert mismatch.value.differences == [
        f"table auth.credentials: {USERS + 1} rows as in the backup, but their contents differ "
        f"(checksum 000000000000… expected, "
        f"{result.manifest.fingerprint.tables['auth.credentials'].md5[:12]}… found)",
        f"table users.users: {USERS + 5} rows in the backup, {USERS} restored",
    ]
    assert await fingerprint_of(seeded) == before
    assert await _databases(postgres_admin_dsn, f"{database_name(seeded)}_%") == []


async def test_a_pg_dump_older_than_the_server_is_refused(
    database_url: str, tmp_path: Path
) -> None:
    old = tmp_path / "bin" / "pg_dump"
    old.parent.mkdir()
    old.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 12.22'\n")
    old.chmod(0o755)
    conn = await asyncpg.connect(database_url)
    try:
        server_major = conn.get_server_version().major
    finally:
        await conn.close()

    with pytest.raises(
        RefusedError, match=rf"pg_dump 12\.22 .* older than PostgreSQL {server_major}"
    ):
        await find_tool(
            "pg_dump", minimum=server_major, prefer=server_major, why="test", found=[(old, "test")]
        )
    tool = PgTool(path=old, origin="test", version="12.22", major=12)
    with pytest.raises(RefusedError, match="older than"):
        await backup(dsn=database_url, out=None, backups_dir=tmp_path / "backups", pg_dump=tool)
    assert not (tmp_path / "backups").exists()


async def test_backup_never_overwrites_and_needs_the_manifest_to_restore(
    database_url: str, tmp_path: Path
) -> None:
    result = await backup(dsn=database_url, out=tmp_path / "one.dump", backups_dir=tmp_path)
    assert result.dump == (tmp_path / "one.dump").absolute()

    with pytest.raises(RefusedError, match="already exists"):
        await backup(dsn=database_url, out=result.dump, backups_dir=tmp_path)
    result.manifest_path.unlink()
    with pytest.raises(RefusedError, match="is missing"):
        await restore(dump=result.dump, dsn=database_url, yes=True)


async def test_checksums_follow_contents_not_the_physical_order_of_rows(seeded: str) -> None:
    before = await fingerprint_of(seeded)
    # An UPDATE writes a new row version at the end of the table: same rows, another order.
    await _sql(seeded, "UPDATE users.users SET email = email WHERE email = 'backup-0@example.com'")
    assert await fingerprint_of(seeded) == before

    await _sql(
        seeded, "UPDATE users.users SET display_name = 'Changed' WHERE email LIKE 'backup-0%'"
    )
    after = await fingerprint_of(seeded)
    assert after.tables["users.users"].rows == before.tables["users.users"].rows
    assert after.tables["users.users"].md5 != before.tables["users.users"].md5
    assert after.tables["auth.credentials"] == before.tables["auth.credentials"]
    assert after.ddl == before.ddl


def test_passwords_reach_pg_dump_through_the_environment_not_its_command_line() -> None:
    dsn = "postgresql://portico:s%40cret@db.example:5432/portico?sslmode=require"
    assert libpq(dsn) == (
        "postgresql://portico@db.example:5432/portico?sslmode=require",
        {"PGPASSWORD": "s@cret"},
    )
    assert "cret" not in redact(dsn)
    assert libpq("postgresql://postgres:@/t?host=/tmp/x") == (
        "postgresql://postgres@/t?host=/tmp/x",
        {},
    )


async def test_cli_backup_and_restore_with_exit_codes(
    seeded: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from portico_dbtools.__main__ import main

    out = tmp_path / "cli"
    out.mkdir()
    assert (
        await asyncio.to_thread(main, ["backup", "--database-url", seeded, "--out", str(out)]) == 0
    )
    dump = next(out.glob("portico-*.dump"))
    printed = capsys.readouterr().out
    assert "backed up database" in printed
    assert "users.users: 3 rows" in printed

    assert await asyncio.to_thread(main, ["restore", str(dump), "--database-url", seeded]) == 2
    assert "--yes" in capsys.readouterr().err

    code = await asyncio.to_thread(main, ["restore", str(dump), "--database-url", seeded, "--yes"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "row counts, checksums and schema match the manifest" in printed
    assert "migrations up to date" in printed
    previous = printed.split("kept as ", 1)[1].split(";", 1)[0]
    await _sql(with_database(seeded, "postgres"), f'DROP DATABASE "{previous}" WITH (FORCE)')

    missing = ["restore", str(tmp_path / "missing.dump"), "--database-url", seeded]
    assert await asyncio.to_thread(main, missing) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as shown:
        main(["restore", "--help"])
    assert shown.value.code == 0
    assert "--yes" in capsys.readouterr().out
