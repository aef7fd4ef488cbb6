"""All of the auth service's SQL: ``auth.credentials`` through an asyncpg pool.

Emails are compared with ``lower(email)`` (the unique index is on it). Database failures leave
as domain errors: a connection that cannot be opened or is lost is ``Unavailable``, a query
that runs out of time ``DeadlineExceeded``; the original exception is chained for the server
log. State changes of a pending credential are conditional on its id, state and idempotency key
inside the UPDATE/DELETE itself, so concurrent retries cannot both win.

Events go to ``auth.outbox``: ``credential.created`` (activation) and ``credential.deleted``
in the same transaction as the change; session events, whose state is in Valkey, through
:meth:`CredentialRepository.record` in a transaction of their own, after the fact.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from portico_auth.domain import Credential, CredentialState
from portico_auth.errors import AlreadyExists, Unavailable
from portico_common.outbox import Event, new_event, outbox_insert
from portico_common.postgres import DatabaseErrors, Repository, from_row

_INSERT_PENDING = """
    INSERT INTO auth.credentials (email, display_name, password_hash, idempotency_key)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT DO NOTHING
    RETURNING id, user_id, email, display_name, password_hash, state, idempotency_key, created_at
"""
_BY_KEY = """
    SELECT id, user_id, email, display_name, password_hash, state, idempotency_key, created_at
    FROM auth.credentials WHERE idempotency_key = $1
"""
_BY_EMAIL = """
    SELECT id, user_id, email, display_name, password_hash, state, idempotency_key, created_at
    FROM auth.credentials WHERE lower(email) = lower($1)
"""
_BY_ID = """
    SELECT id, user_id, email, display_name, password_hash, state, idempotency_key, created_at
    FROM auth.credentials WHERE id = $1
"""
_BY_USER = """
    SELECT id, user_id, email, display_name, password_hash, state, idempotency_key, created_at
    FROM auth.credentials WHERE user_id = $1
"""
_ACTIVATE = """
    UPDATE auth.credentials
    SET state = 'active', user_id = $3, updated_at = clock_timestamp()
    WHERE id = $1 AND idempotency_key = $2 AND state = 'pending'
    RETURNING id
"""
_DROP_PENDING = """
    DELETE FROM auth.credentials
    WHERE id = $1 AND idempotency_key = $2 AND state = 'pending'
    RETURNING id
"""
_DELETE = "DELETE FROM auth.credentials WHERE id = $1 RETURNING user_id"
_STALE_PENDING = """
    SELECT id, user_id, email, display_name, password_hash, state, idempotency_key, created_at
    FROM auth.credentials
    WHERE state = 'pending' AND created_at < now() - make_interval(secs => $1)
    ORDER BY created_at
    LIMIT $2
"""
_SET_HASH = """
    UPDATE auth.credentials SET password_hash = $2, updated_at = clock_timestamp() WHERE id = $1
"""

_INSERT_EVENT = outbox_insert("auth")


def _credential(row: asyncpg.Record) -> Credential:
    return from_row(Credential, row, state=CredentialState(row["state"]))


class CredentialRepository(Repository):
    """Credentials on PostgreSQL. Each call is limited to ``query_timeout_s``, or less: the
    caller's deadline when it ends sooner (:class:`portico_common.postgres.Deadline`)."""

    errors = DatabaseErrors(unavailable=Unavailable, unique_violation=AlreadyExists)

    async def _one(self, query: str, *args: Any) -> Credential | None:
        async with self._connect() as (conn, deadline):
            row = await conn.fetchrow(query, *args, timeout=deadline.left())
        return None if row is None else _credential(row)

    async def insert_pending(
        self, *, email: str, display_name: str, password_hash: str, idempotency_key: UUID
    ) -> Credential | None:
        """A new pending credential; None when the email or the key is already taken."""
        return await self._one(_INSERT_PENDING, email, display_name, password_hash, idempotency_key)

    async def by_key(self, idempotency_key: UUID) -> Credential | None:
        return await self._one(_BY_KEY, idempotency_key)

    async def by_email(self, email: str) -> Credential | None:
        """The credential of an email (case-insensitive), whatever its state."""
        return await self._one(_BY_EMAIL, email)

    async def by_id(self, credential_id: UUID) -> Credential | None:
        return await self._one(_BY_ID, credential_id)

    async def by_user(self, user_id: UUID) -> Credential | None:
        """The credential of a user (``user_id`` is unique), if it has one."""
        return await self._one(_BY_USER, user_id)

    async def activate(self, credential: Credential, *, user_id: UUID) -> bool:
        """Pending → active for ``user_id`` (+ ``credential.created``); False when the row is no
        longer that pending row.

        ``AlreadyExists`` when another credential already names ``user_id``.
        """
        async with self._connect(transaction=True) as (conn, deadline):
            done = await conn.fetchval(
                _ACTIVATE,
                credential.id,
                credential.idempotency_key,
                user_id,
                timeout=deadline.left(),
            )
            if done is not None:
                event = new_event(
                    "credential.created",
                    subject=str(user_id),
                    payload={"credential_id": str(credential.id)},
                )
                await conn.execute(_INSERT_EVENT, *event.row(), timeout=deadline.left())
        return done is not None

    async def drop_pending(self, credential: Credential) -> bool:
        """Delete a still-pending credential; False when it is no longer that pending row."""
        async with self._connect() as (conn, deadline):
            done = await conn.fetchval(
                _DROP_PENDING, credential.id, credential.idempotency_key, timeout=deadline.left()
            )
        return done is not None

    async def delete(self, credential_id: UUID) -> None:
        """Delete a credential (+ ``credential.deleted`` when it was active)."""
        async with self._connect(transaction=True) as (conn, deadline):
            user_id = await conn.fetchval(_DELETE, credential_id, timeout=deadline.left())
            if user_id is not None:
                event = new_event(
                    "credential.deleted",
                    subject=str(user_id),
                    payload={"credential_id": str(credential_id)},
                )
                await conn.execute(_INSERT_EVENT, *event.row(), timeout=deadline.left())

    async def record(self, *events: Event) -> None:
        """Write ``events`` to the outbox in a transaction of their own (for changes made
        elsewhere, e.g. sessions in Valkey: the events follow the change, they are not atomic
        with it)."""
        async with self._connect(transaction=True) as (conn, deadline):
            await conn.executemany(
                _INSERT_EVENT, [event.row() for event in events], timeout=deadline.left()
            )

    async def stale_pending(self, *, older_than_s: float, limit: int = 100) -> list[Credential]:
        """Pending credentials created more than ``older_than_s`` ago, oldest first."""
        async with self._connect() as (conn, deadline):
            rows = await conn.fetch(_STALE_PENDING, older_than_s, limit, timeout=deadline.left())
        return [_credential(row) for row in rows]

    async def set_password_hash(self, credential_id: UUID, password_hash: str) -> None:
        async with self._connect() as (conn, deadline):
            await conn.execute(_SET_HASH, credential_id, password_hash, timeout=deadline.left())
