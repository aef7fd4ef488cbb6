"""What can go wrong, as exceptions that carry the command's exit code."""

from __future__ import annotations


class DbToolError(Exception):
    """A backup or restore failed (PostgreSQL unreachable, pg_dump/pg_restore failed): exit 1."""

    exit_code = 1


class RefusedError(DbToolError):
    """Refused before anything changed (unsafe target, unusable tool, damaged file): exit 2."""

    exit_code = 2


class VerificationError(DbToolError):
    """The restored copy does not match the manifest; the target was left as it was: exit 3."""

    exit_code = 3

    def __init__(self, message: str, differences: list[str]) -> None:
        super().__init__(message + "".join(f"\n  - {line}" for line in differences))
        self.differences = differences
