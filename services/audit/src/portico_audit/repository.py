"""SQL of the audit service (asyncpg): store an event once, list events newest first.

``store`` is ``INSERT … ON CONFLICT (id) DO NOTHING`` in its own transaction: the event id is the
primary key, so a redelivered or re-published event is a no-op (``store`` returns False). The
consumer acknowledges the stream entry only after ``store`` returned, i.e. after the commit.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from portico_audit.domain import AuditRecord, Cursor, Page
from portico_audit.errors import Unavailable
from portico_common.postgres import DatabaseErrors, Repository, from_row

_COLUMNS = "id, type, subject, actor, service, occurred_at, recorded_at, payload, trace_id"
_INSERT = """
    INSERT INTO audit.events (id, type, subject, actor, service, occurred_at, payload, trace_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)
    ON CONFLICT (id) DO NOTHING
"""


def _record(row: asyncpg.Record) -> AuditRecord:
    payload = row["payload"]
    return from_row(
        AuditRecord,
        row,
        payload=json.loads(payload) if isinstance(payload, str) else dict(payload or {}),
    )


class EventRepository(Repository):
    """``audit.events`` over an asyncpg pool."""

    errors = DatabaseErrors(unavailable=Unavailable)

    async def store(self, record: AuditRecord) -> bool:
        """Insert ``record`` and commit; False when an event with its id was stored before.

        Raises ``Unavailable``/``DeadlineExceeded`` when PostgreSQL cannot take it now (retry
        later), and asyncpg's own errors when PostgreSQL refuses this event's data.
        """
        async with self._connect(transaction=True) as (conn, deadline):
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
        async with self._connect(time_left) as (conn, deadline):
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
