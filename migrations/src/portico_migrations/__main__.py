"""``portico-migrate``: apply Portico's SQL migrations, as a step of its own (never at start-up)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

import asyncpg
from pydantic import ValidationError

from portico_migrations.config import MigrateSettings
from portico_migrations.runner import MigrationError, MigrationFailed, migrate, status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portico-migrate",
        description=(
            "Apply forward-only SQL migrations (migrations/<service>/NNNN_name.sql) to PostgreSQL. "
            "Each file runs in a transaction, checksums are recorded, an advisory lock keeps two "
            "runners apart, re-runs are no-ops and an edited applied file is refused."
        ),
        epilog="Environment: DATABASE_URL or MIGRATE_DATABASE_URL, MIGRATE_DIR, "
        "MIGRATE_LOCK_TIMEOUT_S. Exit codes: 0 ok, 1 cannot connect, 2 refused.",
    )
    parser.add_argument("command", nargs="?", choices=["up", "status"], default="up")
    parser.add_argument("--database-url", help="overrides DATABASE_URL / MIGRATE_DATABASE_URL")
    parser.add_argument("--dir", type=Path, help="overrides MIGRATE_DIR (default: migrations/)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = MigrateSettings()
    except ValidationError as exc:
        print(f"portico-migrate: bad settings: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    secret = settings.database_url
    dsn = args.database_url or (secret.get_secret_value() if secret else None)
    if not dsn:
        print("portico-migrate: set DATABASE_URL (or pass --database-url)", file=sys.stderr)  # noqa: T201
        return 2
    root: Path = args.dir or settings.dir
    try:
        if args.command == "status":
            for label, state in asyncio.run(status(dsn=dsn, root=root)):
                print(f"{state:8} {label}")  # noqa: T201
        else:
            applied = asyncio.run(
                migrate(dsn=dsn, root=root, lock_timeout_s=settings.lock_timeout_s)
            )
            logging.getLogger("portico.migrate").info(
                "%d migration(s) applied; database is up to date", len(applied)
            )
    except MigrationError as exc:
        print(f"portico-migrate: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except MigrationFailed as exc:
        print(f"portico-migrate: migration failed and was rolled back: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        print(f"portico-migrate: cannot reach PostgreSQL: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
