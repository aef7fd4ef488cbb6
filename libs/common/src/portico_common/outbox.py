"""Domain events through a transactional outbox, and the relay that publishes them.

Writing: a service builds an :class:`Event` with :func:`new_event` (id, type, subject, actor,
time, a small JSON payload, and the W3C trace context of the current span) and its repository
INSERTs it into ``<schema>.outbox`` (:func:`outbox_insert` with :meth:`Event.row`), in the same
transaction as the change it describes (the auth service's session events, whose state lives in
Valkey, are written right after the Valkey change instead; see docs/architecture.md, "Events").

Publishing: :class:`OutboxRelay` (one per service process, a background task) repeats, in one
PostgreSQL transaction: take the service's advisory lock (``pg_try_advisory_xact_lock``; a
replica that does not get it skips the round), ``SELECT`` up to ``batch_size`` unpublished rows
``ORDER BY seq … FOR UPDATE SKIP LOCKED``, ``XADD`` each to the stream (``MAXLEN ~``), mark them
``published_at = now()`` and commit. With ``replica_acks`` (Valkey with replicas, docs/valkey-ha.md)
the XADDs are followed by ``WAIT`` on the same connection, and a batch fewer replicas
acknowledged is rolled back and sent again: an event marked published survives a failover.

Guarantee: **at-least-once**. A row is marked only after its XADD succeeded, in the transaction
that locked it; a crash or error between XADD and commit leaves it unpublished and the next round
publishes it again with the same ``id`` field, so consumers deduplicate by it. Valkey down: the
transaction rolls back, rows stay pending and the relay retries with exponential backoff (up to
``max_backoff_s``); nothing is lost. Several replicas: the advisory lock keeps one publisher at a
time per service, so the stream carries the rows in ``seq`` order (re-published duplicates may
repeat earlier events). Rows of transactions still open when a round reads are published in a
later round, so across subjects the stream follows commit visibility, not strictly ``seq``;
changes to one user are serialized by its row lock, so they keep their order.

Tracing: the relay's rounds are not traced (``suppress_instrumentation``). A round runs five
times a second, idle or not, and asyncpg's instrumentation would make each of its queries a trace
of its own: about 35 single-span traces a second per process, all noise. What an event's trace
needs travels inside the event (its ``traceparent``), and the audit consumer's span links to it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, Field
from valkey.asyncio import Valkey

if TYPE_CHECKING:  # the services bring asyncpg; this module only uses the pool they pass
    import asyncpg

_log = logging.getLogger(__name__)

#: Column list of an outbox INSERT (:func:`outbox_insert`), matching :meth:`Event.row`.
OUTBOX_COLUMNS = "id, type, subject, actor, occurred_at, payload, trace_context"

_SCHEMA = re.compile(r"[a-z_][a-z0-9_]*")
_CLEANUP_EVERY_S = 60.0
#: One publisher per service at a time, for the duration of its transaction.
_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext($1))"
_CLEANUP_CHUNK = 1000


class OutboxSettings(BaseModel):
    """The event relay: where outbox rows go, how fast, and how long published rows stay."""

    #: Run the relay in this process (false: this replica only writes events).
    relay_enabled: bool = True
    #: The Valkey Stream the events are XADDed to (shared by every service).
    stream: str = "portico:events:v1"
    #: ``XADD … MAXLEN ~ n``: the stream is trimmed (approximately) to about this many entries.
    stream_maxlen: int = Field(default=100_000, ge=1)
    #: Rows published per transaction.
    batch_size: int = Field(default=100, ge=1, le=10_000)
    #: Pause between rounds when nothing was pending.
    poll_interval_s: float = Field(default=0.2, gt=0)
    #: Longest pause between retries while Valkey or PostgreSQL fails (doubling from the poll).
    max_backoff_s: float = Field(default=5.0, gt=0)
    #: Published rows older than this are deleted (checked every minute).
    retention_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    #: ``WAIT <replica_acks> <replica_ack_timeout_ms>`` after each batch's XADDs: a batch is
    #: marked published only once this many replicas have it, so it survives the loss of the
    #: primary (docs/valkey-ha.md). 0: no WAIT (a single server, local development).
    replica_acks: int = Field(default=0, ge=0)
    replica_ack_timeout_ms: int = Field(default=1000, ge=1)


def _outbox_table(schema: str) -> str:
    """``<schema>.outbox``, once ``schema`` is known to be a plain schema name."""
    if not _SCHEMA.fullmatch(schema):
        raise ValueError(f"not a schema name: {schema!r}")
    return f"{schema}.outbox"


def outbox_insert(schema: str) -> str:
    """The INSERT of one event into ``<schema>.outbox``; its arguments are :meth:`Event.row`."""
    return f"""
        INSERT INTO {_outbox_table(schema)} ({OUTBOX_COLUMNS})
        VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb)
    """  # noqa: S608 (a checked schema name, a constant column list)


@dataclass(frozen=True, slots=True)
class Event:
    """One domain event, as stored in the outbox and published to the stream."""

    id: uuid.UUID
    type: str
    subject: str
    actor: str | None
    occurred_at: datetime
    payload: Mapping[str, Any] = field(default_factory=dict)
    trace_context: Mapping[str, str] = field(default_factory=dict)

    def row(self) -> tuple[Any, ...]:
        """The INSERT arguments, in :data:`OUTBOX_COLUMNS` order (jsonb as JSON text)."""
        return (
            self.id,
            self.type,
            self.subject,
            self.actor,
            self.occurred_at,
            json.dumps(dict(self.payload)),
            json.dumps(dict(self.trace_context)),
        )


def trace_context() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the current span; empty when there is none."""
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier


def new_event(
    type_: str,
    *,
    subject: str,
    actor: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> Event:
    """An event happening now, in the current span's trace. Never put secrets in ``payload``."""
    return Event(
        id=uuid.uuid4(),
        type=type_,
        subject=subject,
        actor=actor,
        occurred_at=datetime.now(UTC),
        payload=dict(payload or {}),
        trace_context=trace_context(),
    )


def stream_fields(row: Mapping[str, Any], *, service: str) -> dict[str, str]:
    """The stream entry of an outbox row: flat string fields, consumers dedupe by ``id``."""
    context = _json(row["trace_context"])
    entry = {
        "id": str(row["id"]),
        "type": row["type"],
        "subject": row["subject"],
        "actor": row["actor"] or "",
        "occurred_at": row["occurred_at"].isoformat(),
        "service": service,
        "seq": str(row["seq"]),
        "payload": json.dumps(_json(row["payload"]), separators=(",", ":")),
        "traceparent": context.get("traceparent", ""),
    }
    if context.get("tracestate"):
        entry["tracestate"] = context["tracestate"]
    return entry


def _json(value: Any) -> dict[str, Any]:
    loaded = json.loads(value) if isinstance(value, str | bytes) else value
    return dict(loaded or {})


@dataclass(frozen=True, slots=True)
class OutboxMetrics:
    pending: Gauge
    published: Counter


@functools.cache
def outbox_metrics() -> OutboxMetrics:
    """``portico_outbox_pending_events`` and ``portico_outbox_published_total`` (by service)."""
    return OutboxMetrics(
        pending=Gauge(
            "portico_outbox_pending_events",
            "Outbox rows not yet published to the event stream.",
            ["service"],
        ),
        published=Counter(
            "portico_outbox_published",
            "Outbox rows published to the event stream (re-publications count again).",
            ["service"],
        ),
    )


#: Called after the XADDs of a batch, before the rows are marked (tests inject failures here).
AfterPublish = Callable[[Sequence[Any]], Awaitable[None]]


class NotReplicated(Exception):  # noqa: N818 (reads as the condition)
    """Fewer replicas than ``replica_acks`` acknowledged a batch: it is sent again."""


class OutboxRelay:
    """Publishes ``<schema>.outbox`` to the stream; see the module docstring for the guarantee."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        client: Valkey,
        *,
        schema: str,
        service: str,
        settings: OutboxSettings,
        after_publish: AfterPublish | None = None,
    ) -> None:
        table = _outbox_table(schema)
        self._pool = pool
        self._client = client
        self._service = service
        self._settings = settings
        self._after_publish = after_publish
        self._lock_key = f"portico.outbox:{schema}"
        self._select = f"""
            SELECT id, seq, type, subject, actor, occurred_at, payload, trace_context
            FROM {table} WHERE published_at IS NULL
            ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED
        """  # noqa: S608 (schema is checked above)
        self._mark = f"UPDATE {table} SET published_at = now() WHERE id = ANY($1::uuid[])"  # noqa: S608
        self._pending = f"SELECT count(*) FROM {table} WHERE published_at IS NULL"  # noqa: S608
        self._cleanup = f"""
            DELETE FROM {table} WHERE id IN (
                SELECT id FROM {table}
                WHERE published_at < now() - make_interval(secs => $1) LIMIT $2
            )
        """  # noqa: S608

    async def publish_batch(self) -> int:
        """One round: publish up to ``batch_size`` pending rows in order; how many were."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext($1))", self._lock_key
            ):
                return 0  # another replica is publishing this service's events
            rows = await conn.fetch(self._select, self._settings.batch_size)
            if not rows:
                return 0
            async with self._client.pipeline(transaction=False) as pipe:
                for row in rows:
                    pipe.xadd(
                        self._settings.stream,
                        stream_fields(row, service=self._service),  # type: ignore[arg-type]
                        maxlen=self._settings.stream_maxlen,
                        approximate=True,
                    )
                if self._settings.replica_acks:
                    pipe.execute_command(
                        "WAIT", self._settings.replica_acks, self._settings.replica_ack_timeout_ms
                    )
                replies = await pipe.execute()
            if self._settings.replica_acks and int(replies[-1]) < self._settings.replica_acks:
                # Rolled back: the rows stay unpublished and the next round sends them again
                # (the consumer stores each event id once).
                raise NotReplicated(
                    f"{int(replies[-1])} of {self._settings.replica_acks} replica(s) acknowledged"
                    f" the batch within {self._settings.replica_ack_timeout_ms} ms"
                )
            if self._after_publish is not None:
                await self._after_publish(rows)
            await conn.execute(self._mark, [row["id"] for row in rows])
        outbox_metrics().published.labels(self._service).inc(len(rows))
        return len(rows)

    async def pending(self) -> int:
        """Rows not yet published (also sets the pending gauge)."""
        async with self._pool.acquire() as conn:
            count = int(await conn.fetchval(self._pending))
        outbox_metrics().pending.labels(self._service).set(count)
        return count

    async def delete_published(self) -> int:
        """Delete published rows older than ``retention_s``; how many were."""
        deleted = 0
        async with self._pool.acquire() as conn:
            while True:
                status = await conn.execute(
                    self._cleanup, self._settings.retention_s, _CLEANUP_CHUNK
                )
                count = int(status.split()[-1])
                deleted += count
                if count < _CLEANUP_CHUNK:
                    return deleted

    async def run(self) -> None:
        """Publish until cancelled; failures are logged and retried with backoff."""
        settings = self._settings
        failures = 0
        last_cleanup = 0.0
        while True:
            try:
                with suppress_instrumentation():  # see "Tracing" above
                    published = await self.publish_batch()
                    await self.pending()
                    if time.monotonic() - last_cleanup >= _CLEANUP_EVERY_S:
                        await self.delete_published()
                        last_cleanup = time.monotonic()
            except Exception as exc:  # Valkey or PostgreSQL down: rows stay pending
                failures += 1
                delay = min(settings.poll_interval_s * 2**failures, settings.max_backoff_s)
                _log.warning(
                    "outbox relay (%s) failed: %s: %s; retrying in %.1fs",
                    self._service,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            if published < settings.batch_size:
                await asyncio.sleep(settings.poll_interval_s)
