"""SQL of the audit service (asyncpg): store an event once, list events newest first.

``store`` is ``INSERT … ON CONFLICT (id) DO NOTHING`` in its own transaction: the event id is the
primary key, so a redelivered or re-published event is a no-op (``store`` returns False). The
consumer acknowledges the stream entry only after ``store`` returned, i.e. after the commit.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from portico_audit.domain import AuditRecord, Cursor, Page
from portico_audit.errors import DeadlineExceeded, Unavailable

_log = logging.getLogger(__name__)

_COLUMNS = "id, type, subject, actor, service, occurred_at, recorded_at, payload, trace_id"
_INSERT = """
    INSERT INTO audit.events (id, type, subject, actor, service, occurred_at, payload, trace_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)
    ON CONFLICT (id) DO NOTHING
"""

#: Errors that mean "PostgreSQL is not reachable", not "this event is bad".
CONNECTION_LOST = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.InsufficientResourcesError,
    asyncpg.exceptions.OperatorInterventionError,
    # A connection the server terminated (pg_terminate_backend, a restart) can surface as an
    # internal client error on its next use instead of a connection error.
    asyncpg.exceptions.InternalClientError,
)


class _Deadline:
    """The time a call may still spend, measured on the monotonic clock."""

    def __init__(self, time_left: float | None, limit: float) -> None:
        budget = limit if time_left is None else min(time_left, limit)
        self._end = time.monotonic() + budget

    def left(self) -> float:
        remaining = self._end - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded()
        return remaining


def _record(row: Any) -> AuditRecord:
    payload = row["payload"]
    return AuditRecord(
        id=row["id"],
        type=row["type"],
        subject=row["subject"],
        actor=row["actor"],
        service=row["service"],
        occurred_at=row["occurred_at"],
        recorded_at=row["recorded_at"],
        payload=json.loads(payload) if isinstance(payload, str) else dict(payload or {}),
        trace_id=row["trace_id"],
    )


class EventRepository:
    """``audit.events`` over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], *, query_timeout_s: float) -> None:
        self._pool = pool
        self._limit = query_timeout_s

    @asynccontextmanager
    async def _connection(
        self, deadline: _Deadline
    ) -> AsyncIterator[PoolConnectionProxy[asyncpg.Record]]:
        try:
            conn = await self._pool.acquire(timeout=deadline.left())
        except TimeoutError as exc:
            raise DeadlineExceeded() from exc
        except Exception as exc:  # any failure to connect (refused, auth, no such db, ...)
            _log.warning("cannot get a PostgreSQL connection: %s: %s", type(exc).__name__, exc)
            raise Unavailable() from exc
        try:
            yield conn
        except (TimeoutError, asyncpg.QueryCanceledError) as exc:
            raise DeadlineExceeded() from exc
        except CONNECTION_LOST as exc:
            _log.warning("PostgreSQL connection failed: %s: %s", type(exc).__name__, exc)
            raise Unavailable() from exc
        finally:
            try:
                await self._pool.release(conn, timeout=1.0)
            except Exception:  # the pool already dropped the broken connection
                _log.debug("releasing a connection failed", exc_info=True)

    async def store(self, record: AuditRecord) -> bool:
        """Insert ``record`` and commit; False when an event with its id was stored before.

        Raises ``Unavailable``/``DeadlineExceeded`` when PostgreSQL cannot take it now (retry
        later), and asyncpg's own errors when PostgreSQL refuses this event's data.
        """
        deadline = _Deadline(None, self._limit)
        async with self._connection(deadline) as conn, conn.transaction():
            status = await conn.execute(
                _INSERT,
                record.id,
                record.type,
                record.subject,
                record.actor,
                record.service,
                record.occurred_at,
                json.dumps(dict(record.payload)),
                record.trace_id,
                timeout=deadline.left(),
            )
        return bool(status == "INSERT 0 1")

    async def list_events(
        self,
        *,
        page_size: int,
        after: Cursor | None,
        subject: str = "",
        type_: str = "",
        time_left: float | None = None,
    ) -> Page:
        """One page, newest first, optionally only of ``subject`` and/or ``type_``."""
        deadline = _Deadline(time_left, self._limit)
        conditions: list[str] = []
        args: list[Any] = []
        if subject:
            args.append(subject)
            conditions.append(f"subject = ${len(args)}")
        if type_:
            args.append(type_)
            conditions.append(f"type = ${len(args)}")
        if after is not None:
            args += [after.recorded_at, after.id]
            conditions.append(f"(recorded_at, id) < (${len(args) - 1}, ${len(args)})")
        args.append(page_size + 1)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        query = (
            f"SELECT {_COLUMNS} FROM audit.events {where} "  # noqa: S608 (constant fragments)
            f"ORDER BY recorded_at DESC, id DESC LIMIT ${len(args)}"
        )
        async with self._connection(deadline) as conn:
            rows = await conn.fetch(query, *args, timeout=deadline.left())
        events = [_record(row) for row in rows[:page_size]]
        last = events[-1] if events else None
        more = len(rows) > page_size
        next_cursor = (
            Cursor(last.recorded_at, last.id)
            if more and last is not None and last.recorded_at is not None
            else None
        )
        return Page(events=events, next_cursor=next_cursor)


async def ping_database(*, dsn: str, time_limit_s: float) -> None:
    """Raise ``Unavailable`` unless PostgreSQL answers ``SELECT 1`` within ``time_limit_s``."""
    try:
        conn = await asyncpg.connect(dsn, timeout=time_limit_s)
        try:
            await conn.fetchval("SELECT 1", timeout=time_limit_s)
        finally:
            await conn.close(timeout=time_limit_s)
    except Exception as exc:  # refused, timed out, auth, shutting down, ...
        raise Unavailable(f"PostgreSQL does not answer: {type(exc).__name__}") from exc
