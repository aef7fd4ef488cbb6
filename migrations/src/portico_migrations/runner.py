"""A small forward-only SQL migration runner for PostgreSQL.

Layout: ``<dir>/<service>/<NNNN>_<name>.sql``, e.g. ``migrations/users/0001_create_users.sql``.
Each service's files apply in version order, each in its own transaction together with its
bookkeeping row in ``portico_migrations.applied`` (service, version, name, sha256, time).

Guarantees:

* **One runner at a time.** The whole run holds a PostgreSQL session advisory lock; a second
  runner waits (up to ``lock_timeout_s``) and then finds nothing left to do.
* **Re-runs are no-ops.** Applied files are skipped.
* **Applied files are immutable.** A file whose checksum differs from the recorded one, an applied
  file missing on disk, or a new file numbered below an applied one stops the run with a
  :class:`MigrationError` before anything is applied.

Why not dbmate or yoyo: neither refuses an edited applied file (no content
checksums) and yoyo locks with a table rather than an advisory lock; the whole runner is the
~150 lines below, on the asyncpg the services already use.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger("portico.migrate")

# pg_advisory_lock key: the first 8 bytes of sha256("portico_migrations") as a signed bigint.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"portico_migrations").digest()[:8], "big", signed=True)
_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

_BOOKKEEPING = """
CREATE SCHEMA IF NOT EXISTS portico_migrations;
CREATE TABLE IF NOT EXISTS portico_migrations.applied (
    service    text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    sha256     text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, version)
);
"""


class MigrationError(Exception):
    """Migrations on disk and the ones recorded in the database disagree; nothing was applied."""


class MigrationFailed(Exception):  # noqa: N818 (reads better than MigrationFailedError)
    """A migration's SQL failed; its transaction was rolled back, earlier files stay applied."""


@dataclass(frozen=True, slots=True)
class Migration:
    service: str
    version: int
    name: str
    path: Path
    sql: str
    sha256: str

    @property
    def label(self) -> str:
        return f"{self.service}/{self.path.name}"


@dataclass(frozen=True, slots=True)
class Applied:
    service: str
    version: int
    name: str
    sha256: str


def discover(root: Path) -> list[Migration]:
    """Every migration under ``root``, ordered by service then version."""
    if not root.is_dir():
        raise MigrationError(f"migrations folder {root} does not exist")
    found: list[Migration] = []
    for service_dir in sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*.sql"))):
        versions: set[int] = set()
        for path in sorted(service_dir.glob("*.sql")):
            match = _FILE.match(path.name)
            if match is None:
                raise MigrationError(
                    f"{service_dir.name}/{path.name}: migration files are named NNNN_snake_name.sql"
                )
            version = int(match["version"])
            if version in versions:
                raise MigrationError(f"{service_dir.name}: two files with version {version:04d}")
            versions.add(version)
            data = path.read_bytes()
            found.append(
                Migration(
                    service=service_dir.name,
                    version=version,
                    name=match["name"],
                    path=path,
                    sql=data.decode("utf-8"),
                    sha256=hashlib.sha256(data).hexdigest(),
                )
            )
    return found


def plan(migrations: Sequence[Migration], applied: Sequence[Applied]) -> list[Migration]:
    """The migrations still to apply; raises :class:`MigrationError` on any disagreement."""
    on_disk = {(m.service, m.version): m for m in migrations}
    recorded = {(a.service, a.version): a for a in applied}
    problems: list[str] = []
    for key, record in sorted(recorded.items()):
        migration = on_disk.get(key)
        if migration is None:
            problems.append(
                f"{record.service}/{record.version:04d}_{record.name}.sql was applied but is "
                "not on disk: is this an older checkout than the database?"
            )
        elif migration.sha256 != record.sha256:
            problems.append(
                f"{migration.label} was changed after it was applied (recorded sha256 "
                f"{record.sha256[:12]}…, file now {migration.sha256[:12]}…). Applied migrations "
                "are immutable: revert the edit and put the change in a new file."
            )
    pending = [m for key, m in on_disk.items() if key not in recorded]
    for migration in pending:
        newest = max((v for s, v in recorded if s == migration.service), default=0)
        if migration.version < newest:
            problems.append(
                f"{migration.label} is new but numbered below the applied version {newest:04d} "
                f"of {migration.service}: renumber it above {newest:04d}."
            )
    if problems:
        raise MigrationError("refusing to migrate:\n  - " + "\n  - ".join(problems))
    return sorted(pending, key=lambda m: (m.service, m.version))


async def _acquire_lock(conn: asyncpg.Connection, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    waited = False
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
        if time.monotonic() >= deadline:
            raise MigrationError(
                f"another migration runner has held the lock for over {timeout_s:g} s; giving up"
            )
        if not waited:
            log.info("another migration runner is active; waiting for its lock")
            waited = True
        await asyncio.sleep(0.2)


async def read_applied(conn: asyncpg.Connection) -> list[Applied]:
    rows = await conn.fetch(
        "SELECT service, version, name, sha256 FROM portico_migrations.applied "
        "ORDER BY service, version"
    )
    return [Applied(r["service"], r["version"], r["name"], r["sha256"]) for r in rows]


async def migrate(
    *, dsn: str, root: Path, lock_timeout_s: float = 60.0, connect_timeout_s: float = 10.0
) -> list[Migration]:
    """Apply every pending migration under ``root``; return the ones applied (in order)."""
    migrations = discover(root)
    conn = await asyncpg.connect(dsn, timeout=connect_timeout_s)
    try:
        await _acquire_lock(conn, timeout_s=lock_timeout_s)
        try:
            await conn.execute(_BOOKKEEPING)
            pending = plan(migrations, await read_applied(conn))
            for migration in pending:
                started = time.perf_counter()
                try:
                    async with conn.transaction():
                        await conn.execute(migration.sql)
                        await conn.execute(
                            "INSERT INTO portico_migrations.applied "
                            "(service, version, name, sha256) VALUES ($1, $2, $3, $4)",
                            migration.service,
                            migration.version,
                            migration.name,
                            migration.sha256,
                        )
                except asyncpg.PostgresError as exc:
                    raise MigrationFailed(f"{migration.label}: {exc}") from exc
                log.info(
                    "applied %s in %.0f ms", migration.label, (time.perf_counter() - started) * 1e3
                )
            return pending
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    finally:
        await conn.close()


async def status(*, dsn: str, root: Path, connect_timeout_s: float = 10.0) -> list[tuple[str, str]]:
    """``(label, state)`` for every migration on disk; state is ``applied`` or ``pending``."""
    migrations = discover(root)
    conn = await asyncpg.connect(dsn, timeout=connect_timeout_s)
    try:
        exists = await conn.fetchval("SELECT to_regclass('portico_migrations.applied') IS NOT NULL")
        applied = await read_applied(conn) if exists else []
    finally:
        await conn.close()
    pending = {m.label for m in plan(migrations, applied)}
    return [(m.label, "pending" if m.label in pending else "applied") for m in migrations]
