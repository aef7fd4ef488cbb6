"""The JSON manifest beside each dump (``portico-<time>.dump`` → ``portico-<time>.dump.json``).

It says what the dump must restore to (the fingerprint of the snapshot it was taken from), which
file it belongs to (name, size, sha256: a damaged or swapped dump is refused before anything is
touched) and which programs made it (pg_dump's version decides which pg_restore can read it).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from portico_dbtools.errors import RefusedError
from portico_dbtools.fingerprint import Fingerprint

FORMAT = 1
_CHUNK = 1 << 20


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = FORMAT
    created_at: str
    database: str
    server_version: str
    pg_dump_version: str
    pg_dump_major: int
    dump_file: str
    dump_bytes: int
    dump_sha256: str
    fingerprint: Fingerprint


def manifest_path(dump: Path) -> Path:
    return dump.with_name(dump.name + ".json")


def sha256_file(path: Path) -> tuple[str, int]:
    """``(hex sha256, size in bytes)`` of a file."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def load(dump: Path) -> Manifest:
    """The manifest of ``dump``; refused when either is missing or the manifest is unreadable."""
    if not dump.is_file():
        raise RefusedError(f"{dump} does not exist")
    path = manifest_path(dump)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RefusedError(
            f"{path} is missing: portico-db restores only dumps it can verify (its backups write "
            "the manifest beside the dump). For another dump, use pg_restore directly."
        ) from None
    try:
        manifest = Manifest.model_validate_json(text)
    except ValidationError as exc:
        raise RefusedError(f"{path} is not a portico-db manifest: {exc}") from exc
    if manifest.format != FORMAT:
        raise RefusedError(f"{path} has manifest format {manifest.format}; this is {FORMAT}")
    return manifest


def check_dump(dump: Path, manifest: Manifest) -> None:
    """Refuse a dump whose bytes are not the ones the manifest describes."""
    if not dump.is_file():
        raise RefusedError(f"{dump} does not exist")
    sha256, size = sha256_file(dump)
    if (sha256, size) != (manifest.dump_sha256, manifest.dump_bytes):
        raise RefusedError(
            f"{dump} is damaged or not the dump its manifest describes: {size} bytes with sha256 "
            f"{sha256[:16]}…, the manifest says {manifest.dump_bytes} bytes with sha256 "
            f"{manifest.dump_sha256[:16]}…. Nothing was restored."
        )


def write_synced(path: Path, data: bytes) -> None:
    """Write and fsync ``path`` (mode 0600: a dump's manifest says what the database holds)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync(path: Path) -> None:
    """fsync a file or a folder (after a rename, so the new name survives a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
