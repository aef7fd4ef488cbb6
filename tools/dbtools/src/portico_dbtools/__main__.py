"""``portico-db``: back up and restore Portico's database (``make db-backup`` / ``db-restore``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import asyncpg
from pydantic import ValidationError

from portico_dbtools.backup import BackupResult, backup
from portico_dbtools.errors import DbToolError
from portico_dbtools.manifest import load
from portico_dbtools.restore import RestoreResult, restore
from portico_dbtools.target import Target, resolve
from portico_devstack.config import DevSettings
from portico_migrations.config import default_migrations_dir
from portico_migrations.runner import MigrationError, status

_WHERE = (
    "Database: --database-url, else DATABASE_URL, else the local stack's embedded PostgreSQL "
    "(database portico in <PORTICO_DEV_DATA_DIR>/postgres; used as it is while `make run` is up, "
    "otherwise started for the command and stopped after it)."
)
_EXIT = (
    "Exit codes: 0 done; 1 failed (PostgreSQL unreachable, pg_dump/pg_restore failed); 2 refused "
    "before anything changed (non-empty target without --yes, damaged dump or manifest, pg_dump "
    "older than the server); 3 the restored copy did not match the manifest (target untouched)."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portico-db",
        description=(
            "Back up and restore Portico's PostgreSQL database with PostgreSQL's own pg_dump and "
            "pg_restore, and prove the restore: every backup writes a manifest (rows and a "
            "checksum per table, the schema, the dump's sha256) taken from the dump's own "
            "snapshot, and every restore is checked against it before it replaces anything. "
            "Runbook: docs/operations.md."
        ),
        epilog=f"{_WHERE} {_EXIT}",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{backup,restore}")
    back = commands.add_parser(
        "backup",
        help="dump the database (pg_dump -Fc) with a manifest beside it",
        description=(
            "Dump the whole database (every schema, the migrations' bookkeeping included) in "
            "pg_dump's custom format, plus FILE.json: row counts, checksums and schema from the "
            "same snapshot, the dump's sha256 and pg_dump's version. Both files appear atomically "
            "(written under temporary names, fsynced, renamed). Refused when the only pg_dump "
            "found is older than the server."
        ),
        epilog=f"{_WHERE} {_EXIT}",
    )
    back.add_argument("--database-url", help="the database to back up (default: see below)")
    back.add_argument(
        "--out",
        type=Path,
        help="the dump file to create, or a folder for portico-<UTC time>.dump "
        "(default: <PORTICO_DEV_DATA_DIR>/backups/, i.e. .data/backups/); never overwrites",
    )
    rest = commands.add_parser(
        "restore",
        help="restore a dump into a fresh database, verify it, then swap it in",
        description=(
            "Check FILE against FILE.json (size, sha256), restore it with pg_restore "
            "--single-transaction into a new database, compare every table's rows and checksum "
            "and the schema with the manifest, and only then rename it to the target's name. The "
            "replaced database is kept as <name>_before_<time> when it held rows. Any failure "
            "leaves the target as it was."
        ),
        epilog=f"{_WHERE} {_EXIT}",
    )
    rest.add_argument("file", type=Path, metavar="FILE", help="a dump written by portico-db backup")
    rest.add_argument("--database-url", help="the database to restore into (default: see below)")
    rest.add_argument(
        "--yes",
        action="store_true",
        help="replace a database that holds rows (without it, that is refused)",
    )
    return parser


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")


def _size(n: int) -> str:
    return f"{n / 1024:.1f} kB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MB"


def _report_backup(result: BackupResult, target: Target) -> None:
    m = result.manifest
    tool = result.pg_dump
    _say(f"portico-db: backed up database {m.database} ({target.source})")
    _say(f"  pg_dump   {tool.version} ({tool.path}, {tool.origin})")
    _say(f"  dump      {result.dump} ({_size(m.dump_bytes)}, sha256 {m.dump_sha256[:16]}…)")
    _say(f"  manifest  {result.manifest_path}")
    for name, stats in m.fingerprint.tables.items():
        _say(f"  table     {name}: {stats.rows} rows, checksum {stats.md5[:12]}…")


async def _migrations_note(dsn: str) -> str:
    try:
        states = await status(dsn=dsn, root=default_migrations_dir())
    except MigrationError as exc:
        return f"differ from this checkout: {exc}"
    pending = [label for label, state in states if state == "pending"]
    if pending:
        return f"{len(pending)} pending ({', '.join(pending)}): run `make migrate`"
    return f"up to date ({len(states)} applied)"


async def _report_restore(result: RestoreResult, dump: Path, target: Target) -> None:
    m = result.manifest
    tool = result.pg_restore
    _say(f"portico-db: restored {dump.name} into database {result.database} ({target.source})")
    _say(f"  pg_restore {tool.version} ({tool.path}, {tool.origin})")
    _say(
        f"  verified  {len(m.fingerprint.tables)} tables, {m.fingerprint.total_rows} rows: row "
        "counts, checksums and schema match the manifest"
    )
    if result.previous is not None:
        _say(
            f"  previous  kept as {result.previous}; once satisfied: "
            f'DROP DATABASE "{result.previous}"'
        )
    _say(f"  migrations {await _migrations_note(target.dsn)}")


async def _main(args: argparse.Namespace, settings: DevSettings) -> int:
    if args.command == "restore":
        load(args.file)  # a missing file or manifest is refused before any server is started
    env_url = settings.database_url.get_secret_value() if settings.database_url else None
    async with resolve(
        database_url=args.database_url, env_database_url=env_url, data_dir=settings.data_dir
    ) as target:
        if args.command == "backup":
            result = await backup(
                dsn=target.dsn, out=args.out, backups_dir=settings.data_dir / "backups"
            )
            _report_backup(result, target)
        else:
            restored = await restore(dump=args.file, dsn=target.dsn, yes=args.yes)
            await _report_restore(restored, args.file, target)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = DevSettings()
    except ValidationError as exc:
        sys.stderr.write(f"portico-db: bad settings: {exc}\n")
        return 2
    try:
        return asyncio.run(_main(args, settings))
    except DbToolError as exc:
        sys.stderr.write(f"portico-db: {exc}\n")
        return exc.exit_code
    except (asyncpg.PostgresError, OSError) as exc:  # e.g. a privilege this role lacks
        sys.stderr.write(f"portico-db: {type(exc).__name__}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
