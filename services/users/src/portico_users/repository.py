"""All of the users service's SQL: ``users.users`` through an asyncpg pool.

Every method takes the caller's remaining time (``time_left``, seconds; capped by the configured
query timeout) and spends it on the pool acquire and on each query, both of which asyncpg
enforces (a query that runs out of time is cancelled on the server too). Database failures
leave as domain errors: a unique violation is ``AlreadyExists``, running out of time is
``DeadlineExceeded``, and a connection that cannot be opened or is lost is ``Unavailable``. The
original exception is chained (``__cause__``) for the server log, never shown to clients.

Conditional writes compare the row version inside the UPDATE/DELETE itself, so there is no
window between checking an etag and writing.

Every write also INSERTs its event (``user.created`` / ``user.updated`` / ``user.deleted``)
into ``users.outbox`` in the same transaction: a change commits with its event or not at all,
and a write that changes nothing (not found, etag mismatch) records none.
"""

from __future__ import annotations

from typing import NoReturn
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from portico_common.outbox import Event, new_event, outbox_insert
from portico_common.postgres import DatabaseErrors, Deadline, Repository, from_row
from portico_users.domain import Cursor, Page, User, UserChanges, version_from_etag
from portico_users.errors import (
    AlreadyExists,
    EtagMismatch,
    NotFound,
    Unavailable,
)

_INSERT = """
    INSERT INTO users.users (email, display_name) VALUES ($1, $2)
    RETURNING id, email, display_name, created_at, updated_at, version
"""
_SELECT = """
    SELECT id, email, display_name, created_at, updated_at, version
    FROM users.users WHERE id = $1
"""
_EXISTS = "SELECT EXISTS (SELECT 1 FROM users.users WHERE id = $1)"
_FIRST_PAGE = """
    SELECT id, email, display_name, created_at, updated_at, version
    FROM users.users
    ORDER BY created_at, id
    LIMIT $1
"""
_NEXT_PAGE = """
    SELECT id, email, display_name, created_at, updated_at, version
    FROM users.users
    WHERE (created_at, id) > ($1, $2)
    ORDER BY created_at, id
    LIMIT $3
"""
_UPDATE = """
    UPDATE users.users
    SET email = coalesce($2, email),
        display_name = coalesce($3, display_name),
        version = version + 1,
        updated_at = clock_timestamp()
    WHERE id = $1 AND ($4::bigint IS NULL OR version = $4)
    RETURNING id, email, display_name, created_at, updated_at, version
"""
_DELETE = """
    DELETE FROM users.users WHERE id = $1 AND ($2::bigint IS NULL OR version = $2) RETURNING id
"""

_INSERT_EVENT = outbox_insert("users")


def _expected_version(etag: str | None) -> int | None:
    """The version an etag condition requires; 0 (matches no row) for a foreign etag."""
    if etag is None:
        return None
    return version_from_etag(etag) or 0


def _email_taken() -> AlreadyExists:
    return AlreadyExists("a user with this email already exists")


class UserRepository(Repository):
    """``UserStore`` on PostgreSQL."""

    errors = DatabaseErrors(unavailable=Unavailable, unique_violation=_email_taken)

    async def create_user(
        self,
        *,
        email: str,
        display_name: str,
        actor: str | None = None,
        time_left: float | None = None,
    ) -> User:
        async with self._connect(time_left, transaction=True) as (conn, deadline):
            row = await conn.fetchrow(_INSERT, email, display_name, timeout=deadline.left())
            assert row is not None  # noqa: S101 - INSERT … RETURNING returns the row it inserted
            user = from_row(User, row)
            payload = {"email": user.email, "display_name": user.display_name, "version": 1}
            event = new_event("user.created", subject=str(user.id), actor=actor, payload=payload)
            await _record(conn, deadline, event)
        return user

    async def get_user(self, *, user_id: UUID, time_left: float | None = None) -> User:
        async with self._connect(time_left) as (conn, deadline):
            row = await conn.fetchrow(_SELECT, user_id, timeout=deadline.left())
        if row is None:
            raise NotFound(f"user {user_id} not found")
        return from_row(User, row)

    async def list_users(
        self, *, page_size: int, after: Cursor | None, time_left: float | None = None
    ) -> Page:
        async with self._connect(time_left) as (conn, deadline):
            if after is None:
                rows = await conn.fetch(_FIRST_PAGE, page_size + 1, timeout=deadline.left())
            else:
                rows = await conn.fetch(
                    _NEXT_PAGE, after.created_at, after.id, page_size + 1, timeout=deadline.left()
                )
        users = [from_row(User, row) for row in rows[:page_size]]
        more = len(rows) > page_size
        last = users[-1] if users else None
        next_cursor = Cursor(last.created_at, last.id) if more and last else None
        return Page(users=users, next_cursor=next_cursor)

    async def update_user(
        self,
        *,
        user_id: UUID,
        changes: UserChanges,
        etag: str | None,
        actor: str | None = None,
        time_left: float | None = None,
    ) -> User:
        expected = _expected_version(etag)
        async with self._connect(time_left, transaction=True) as (conn, deadline):
            row = await conn.fetchrow(
                _UPDATE,
                user_id,
                changes.email,
                changes.display_name,
                expected,
                timeout=deadline.left(),
            )
            if row is None:
                await self._raise_missing(conn, deadline, user_id=user_id, conditional=etag)
            user = from_row(User, row)
            fields = {
                name: value
                for name, value in (
                    ("email", changes.email),
                    ("display_name", changes.display_name),
                )
                if value is not None
            }
            payload = {"fields": fields, "version": user.version}
            event = new_event("user.updated", subject=str(user_id), actor=actor, payload=payload)
            await _record(conn, deadline, event)
        return user

    async def delete_user(
        self,
        *,
        user_id: UUID,
        etag: str | None,
        actor: str | None = None,
        time_left: float | None = None,
    ) -> None:
        expected = _expected_version(etag)
        async with self._connect(time_left, transaction=True) as (conn, deadline):
            deleted = await conn.fetchval(_DELETE, user_id, expected, timeout=deadline.left())
            if deleted is None:
                await self._raise_missing(conn, deadline, user_id=user_id, conditional=etag)
            event = new_event("user.deleted", subject=str(user_id), actor=actor)
            await _record(conn, deadline, event)

    async def _raise_missing(
        self,
        conn: PoolConnectionProxy[asyncpg.Record],
        deadline: Deadline,
        *,
        user_id: UUID,
        conditional: str | None,
    ) -> NoReturn:
        """A conditional write matched no row: say whether the user is gone or has moved on."""
        if conditional is not None and await conn.fetchval(
            _EXISTS, user_id, timeout=deadline.left()
        ):
            raise EtagMismatch()
        raise NotFound(f"user {user_id} not found")


async def _record(
    conn: PoolConnectionProxy[asyncpg.Record], deadline: Deadline, event: Event
) -> None:
    """INSERT ``event`` into the outbox, inside the caller's transaction."""
    await conn.execute(_INSERT_EVENT, *event.row(), timeout=deadline.left())
