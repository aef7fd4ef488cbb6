"""``portico-db backup``: one consistent ``pg_dump`` archive plus its manifest, written atomically.

Consistency: a REPEATABLE READ transaction exports its snapshot (``pg_export_snapshot()``);
``pg_dump --snapshot`` dumps exactly that snapshot while the same transaction takes the
fingerprint (rows and checksums per table, the schema). Writes that commit meanwhile are in
neither, so the manifest describes the dump exactly even while the stack is serving.

Atomicity: both files are written under temporary names in the destination folder, fsynced, then
renamed, the dump first and the manifest last: a manifest only ever sits beside a complete dump,
and a crash leaves a hidden ``.partial`` file, never a truncated ``.dump``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from portico_dbtools.errors import DbToolError, RefusedError
from portico_dbtools.fingerprint import take
from portico_dbtools.manifest import Manifest, fsync, manifest_path, sha256_file, write_synced
from portico_dbtools.pgtools import PgTool, find_tool, run
from portico_dbtools.target import connect, database_name, libpq, program_environment


@dataclass(frozen=True, slots=True)
class BackupResult:
    dump: Path
    manifest_path: Path
    manifest: Manifest
    pg_dump: PgTool


def _destination(out: Path | None, backups_dir: Path, now: datetime) -> Path:
    """The dump's path: ``out``, or a new ``portico-<UTC time>.dump`` in a folder."""
    if out is not None and not out.is_dir():
        if out.exists() or manifest_path(out).exists():
            raise RefusedError(f"{out} already exists: a backup never overwrites a file")
        return out.absolute()
    folder = out if out is not None else backups_dir
    stem = f"portico-{now:%Y%m%dT%H%M%SZ}"
    path, n = folder / f"{stem}.dump", 1
    while path.exists() or manifest_path(path).exists():
        path, n = folder / f"{stem}-{n}.dump", n + 1
    return path.absolute()


def _publish(partial: Path, partial_manifest: Path, dump: Path, manifest: Manifest) -> None:
    fsync(partial)
    write_synced(partial_manifest, manifest.model_dump_json(indent=2).encode() + b"\n")
    os.replace(partial, dump)
    try:
        os.replace(partial_manifest, manifest_path(dump))
    except OSError:
        dump.unlink(missing_ok=True)
        raise
    fsync(dump.parent)


async def backup(
    *, dsn: str, out: Path | None, backups_dir: Path, pg_dump: PgTool | None = None
) -> BackupResult:
    """Dump the database ``dsn`` names; ``pg_dump`` overrides the search for the program."""
    now = datetime.now(UTC)
    database = database_name(dsn)
    path = _destination(out, backups_dir, now)
    conn = await connect(dsn)
    try:
        server_version = str(await conn.fetchval("SHOW server_version"))
        major = conn.get_server_version().major
        tool = pg_dump or await find_tool(
            "pg_dump",
            minimum=major,
            prefer=major,
            why="pg_dump refuses to dump a server newer than itself",
        )
        if tool.major < major:
            raise RefusedError(f"{tool.describe()} is older than PostgreSQL {major}")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partials: list[Path] = []
        for suffix in (".partial", ".json.partial"):
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
            os.close(fd)
            partials.append(Path(name))
        partial, partial_manifest = partials
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                snapshot = await conn.fetchval("SELECT pg_catalog.pg_export_snapshot()")
                uri, secrets = libpq(dsn)
                argv = [str(tool.path), "--format=custom", f"--file={partial}"]
                argv += [f"--snapshot={snapshot}", "--no-password", f"--dbname={uri}"]
                dumping = asyncio.create_task(run(argv, env=program_environment(secrets)))
                try:
                    fingerprint = await take(conn)
                    code, stderr = await dumping
                finally:
                    if not dumping.done():
                        dumping.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await dumping
            if code != 0:
                raise DbToolError(
                    f"pg_dump failed (exit code {code}); nothing was written:\n{stderr}"
                )
            sha256, size = await asyncio.to_thread(sha256_file, partial)
            manifest = Manifest(
                created_at=now.isoformat(timespec="seconds").replace("+00:00", "Z"),
                database=database,
                server_version=server_version,
                pg_dump_version=tool.version,
                pg_dump_major=tool.major,
                dump_file=path.name,
                dump_bytes=size,
                dump_sha256=sha256,
                fingerprint=fingerprint,
            )
            await asyncio.to_thread(_publish, partial, partial_manifest, path, manifest)
        finally:
            for leftover in partials:
                leftover.unlink(missing_ok=True)
    finally:
        await conn.close()
    return BackupResult(
        dump=path, manifest_path=manifest_path(path), manifest=manifest, pg_dump=tool
    )
