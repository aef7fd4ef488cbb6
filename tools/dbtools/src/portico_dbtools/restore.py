"""``portico-db restore``: restore a verified copy first, then swap it in for the target.

Why not ``pg_restore --clean --if-exists --single-transaction`` into the target itself: that is
atomic, but it can only be verified after it has committed (a mismatch would already have
replaced the data), it drops only the objects the dump contains (a table a later migration added
survives, next to a bookkeeping table that no longer records it), and it holds exclusive locks on
the live tables while it runs. Instead:

1. the dump's size and sha256 are checked against its manifest (a damaged file stops here);
2. a fresh database ``<target>_restore_<time>`` (from ``template0``, owned by the target's owner)
   receives ``pg_restore --single-transaction --exit-on-error``;
3. its fingerprint is compared with the manifest: every table's rows and checksum, the schema;
4. only then, the swap: the target stops accepting connections, its sessions are ended, and in
   one transaction it is renamed ``<target>_before_<time>`` and the copy takes its name.
   Applications reconnect to the restored database by name.

Any failure before the swap drops the copy and leaves the target exactly as it was. The replaced
database is kept for comparison or rollback (and dropped at once if it held no rows). This needs
the rights to create and rename databases and to end other sessions (the local stack's
``postgres`` superuser has them; a managed service's owner role may not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from portico_dbtools.errors import DbToolError, RefusedError, VerificationError
from portico_dbtools.fingerprint import Fingerprint, differences, tables_with_rows, take
from portico_dbtools.manifest import Manifest, check_dump, load, manifest_path
from portico_dbtools.pgtools import PgTool, find_tool, run
from portico_dbtools.target import (
    connect,
    database_name,
    libpq,
    program_environment,
    quote_ident,
    with_database,
)

log = logging.getLogger("portico.db")

#: Databases never restored into (the server needs them as they are).
PROTECTED = frozenset({"template0", "template1"})
_SESSIONS_END_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class RestoreResult:
    database: str
    manifest: Manifest
    pg_restore: PgTool
    #: The database that was replaced, kept under this name; None when there was none or it was
    #: dropped because it held no rows.
    previous: str | None


async def _maintenance(dsn: str, *, avoid: str) -> asyncpg.Connection:
    """A connection to a database other than the target (``postgres``, else ``template1``)."""
    last: DbToolError | None = None
    for name in ("postgres", "template1"):
        if name == avoid:
            continue
        try:
            return await connect(with_database(dsn, name))
        except DbToolError as exc:
            last = exc
    raise DbToolError(f"cannot reach a maintenance database (postgres, template1): {last}")


async def fingerprint_of(dsn: str) -> Fingerprint:
    conn = await connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await take(conn)
    finally:
        await conn.close()


async def _holding_rows(dsn: str) -> list[str]:
    conn = await connect(dsn)
    try:
        return await tables_with_rows(conn)
    finally:
        await conn.close()


async def _end_sessions(admin: asyncpg.Connection, database: str) -> None:
    deadline = asyncio.get_running_loop().time() + _SESSIONS_END_TIMEOUT_S
    while await admin.fetchval(
        "SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity"
        " WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid()",
        database,
    ):
        if asyncio.get_running_loop().time() > deadline:
            raise DbToolError(
                f"sessions on {database} did not end within {_SESSIONS_END_TIMEOUT_S:g} s"
            )
        await asyncio.sleep(0.1)


async def _swap(
    admin: asyncpg.Connection, *, target: str, staging: str, previous: str | None
) -> None:
    """Give ``staging`` the name ``target`` (which becomes ``previous`` if it exists)."""
    if previous is None:
        await admin.execute(
            f"ALTER DATABASE {quote_ident(staging)} RENAME TO {quote_ident(target)}"
        )
        return
    await admin.execute(f"ALTER DATABASE {quote_ident(target)} WITH ALLOW_CONNECTIONS false")
    try:
        await _end_sessions(admin, target)
        async with admin.transaction():
            await admin.execute(
                f"ALTER DATABASE {quote_ident(target)} RENAME TO {quote_ident(previous)}"
            )
            await admin.execute(
                f"ALTER DATABASE {quote_ident(staging)} RENAME TO {quote_ident(target)}"
            )
    except BaseException:
        with contextlib.suppress(asyncpg.PostgresError, OSError):
            await admin.execute(f"ALTER DATABASE {quote_ident(target)} WITH ALLOW_CONNECTIONS true")
        raise
    # The kept database may be inspected (nothing connects to it by this name).
    with contextlib.suppress(asyncpg.PostgresError, OSError):
        await admin.execute(f"ALTER DATABASE {quote_ident(previous)} WITH ALLOW_CONNECTIONS true")


async def _drop(admin: asyncpg.Connection, database: str) -> None:
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(database)} WITH (FORCE)")
    except (asyncpg.PostgresError, OSError) as exc:
        log.warning("could not drop %s: %s; drop it by hand", database, exc)


async def restore(
    *, dump: Path, dsn: str, yes: bool, pg_restore: PgTool | None = None
) -> RestoreResult:
    """Restore ``dump`` into the database ``dsn`` names, verified; see the module docstring."""
    manifest = await asyncio.to_thread(load, dump)
    await asyncio.to_thread(check_dump, dump, manifest)
    target = database_name(dsn)
    if target in PROTECTED:
        raise RefusedError(f"{target} is PostgreSQL's own; restore into another database")
    admin = await _maintenance(dsn, avoid=target)
    try:
        major = admin.get_server_version().major
        tool = pg_restore or await find_tool(
            "pg_restore",
            minimum=max(major, manifest.pg_dump_major),
            prefer=major,
            why=(
                f"pg_restore must be at least as new as the server and as the pg_dump "
                f"{manifest.pg_dump_version} that wrote {dump.name}"
            ),
        )
        owner = await admin.fetchval(
            "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_catalog.pg_database"
            " WHERE datname = $1",
            target,
        )
        holding = await _holding_rows(dsn) if owner is not None else []
        if holding and not yes:
            shown = ", ".join(holding[:5]) + (", …" if len(holding) > 5 else "")
            raise RefusedError(
                f"database {target} is not empty (rows in {shown}); pass --yes to replace it "
                f"(the current one is kept as {target[:40]}_before_<time> until you drop it)"
            )
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        staging = f"{target[:40]}_restore_{stamp}"
        previous = f"{target[:40]}_before_{stamp}" if owner is not None else None
        create = f"CREATE DATABASE {quote_ident(staging)} TEMPLATE template0"
        if owner is not None:
            create += f" OWNER {quote_ident(owner)}"
        try:
            await admin.execute(create)
        except asyncpg.PostgresError as exc:
            raise DbToolError(f"cannot create the database to restore into: {exc}") from exc
        try:
            uri, secrets = libpq(with_database(dsn, staging))
            argv = [str(tool.path), "--single-transaction", "--exit-on-error", "--no-password"]
            argv += [f"--dbname={uri}", str(dump)]
            code, stderr = await run(argv, env=program_environment(secrets))
            if code != 0:
                raise DbToolError(
                    f"pg_restore failed (exit code {code}); {target} was not touched:\n{stderr}"
                )
            found = differences(
                manifest.fingerprint, await fingerprint_of(with_database(dsn, staging))
            )
            if found:
                raise VerificationError(
                    f"the restored copy does not match {manifest_path(dump).name}; "
                    f"{target} was not touched",
                    found,
                )
            try:
                await _swap(admin, target=target, staging=staging, previous=previous)
            except asyncpg.PostgresError as exc:
                raise DbToolError(
                    f"could not swap the verified copy in ({exc}); {target} was left as it was"
                ) from exc
        except BaseException:
            await _drop(admin, staging)
            raise
        # Checked again now that nothing can write to it (rows may have arrived since the first
        # look); when it cannot be checked, it is kept.
        if previous is not None:
            try:
                empty = not await _holding_rows(with_database(dsn, previous))
            except (DbToolError, asyncpg.PostgresError):
                empty = False
            if empty:
                await _drop(admin, previous)
                previous = None
        return RestoreResult(database=target, manifest=manifest, pg_restore=tool, previous=previous)
    finally:
        await admin.close()
