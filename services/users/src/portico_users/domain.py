"""The users service's domain: plain dataclasses and the rules that need neither gRPC nor SQL.

``UserStore`` is the interface the servicer talks to; the repository (PostgreSQL) and the cache
(Valkey in front of the repository) both implement it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

_ETAG = re.compile(r"[A-Za-z0-9_-]{11}")


def etag_for(version: int) -> str:
    """The opaque etag of a row version: its 8 bytes in URL-safe base64 (11 ASCII chars)."""
    return base64.urlsafe_b64encode(version.to_bytes(8, "big")).rstrip(b"=").decode("ascii")


def version_from_etag(etag: str) -> int | None:
    """The row version an etag stands for, or None when it is not one of our etags."""
    if not _ETAG.fullmatch(etag):
        return None
    try:
        raw = base64.urlsafe_b64decode(etag + "=")
    except (binascii.Error, ValueError):  # pragma: no cover - the regex already rules these out
        return None
    version = int.from_bytes(raw, "big")
    valid = 1 <= version < 2**63 and etag_for(version) == etag  # a bigint, as stored
    return version if valid else None


@dataclass(frozen=True, slots=True)
class User:
    """A user account as stored. ``version`` starts at 1 and grows by one on every update."""

    id: UUID
    email: str
    display_name: str
    created_at: datetime
    updated_at: datetime
    version: int

    @property
    def etag(self) -> str:
        """The opaque version tag clients send back for conditional updates and deletes."""
        return etag_for(self.version)


@dataclass(frozen=True, slots=True)
class UserChanges:
    """The fields an update sets; None leaves a field as it is."""

    email: str | None = None
    display_name: str | None = None


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    """A position in the (created_at, id) order: the last user of a page."""

    created_at: datetime
    id: UUID


@dataclass(frozen=True, slots=True)
class Page:
    """One page of users, oldest first; ``next_cursor`` is None on the last page."""

    users: Sequence[User]
    next_cursor: Cursor | None


class UserStore(Protocol):
    """Where users live. ``time_left`` is the time left to the caller's deadline, in seconds.

    ``etag`` arguments: None applies unconditionally; otherwise the write applies only when the
    user is still at that version (else ``EtagMismatch``). ``actor`` (writes) is who asked for
    the change (the access token's user id), recorded in the change's event.
    """

    async def create_user(
        self,
        *,
        email: str,
        display_name: str,
        actor: str | None = None,
        time_left: float | None = None,
    ) -> User: ...

    async def get_user(self, *, user_id: UUID, time_left: float | None = None) -> User: ...

    async def list_users(
        self, *, page_size: int, after: Cursor | None, time_left: float | None = None
    ) -> Page: ...

    async def update_user(
        self,
        *,
        user_id: UUID,
        changes: UserChanges,
        etag: str | None,
        actor: str | None = None,
        time_left: float | None = None,
    ) -> User: ...

    async def delete_user(
        self,
        *,
        user_id: UUID,
        etag: str | None,
        actor: str | None = None,
        time_left: float | None = None,
    ) -> None: ...
