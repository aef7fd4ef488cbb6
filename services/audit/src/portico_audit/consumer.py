"""The event consumer: ``portico:events:v1`` → ``audit.events``, each event stored once.

One :class:`EventConsumer` per process, a member (``consumer.name``) of the consumer group
``consumer.group``, created at start with ``XGROUP CREATE … 0 MKSTREAM`` (a new group reads the
stream from its first entry; an existing group keeps its position). Each round:

1. ``XREADGROUP GROUP <group> <name> COUNT <batch_size> BLOCK <block_ms> STREAMS <stream> >``;
2. for each entry: parse it, ``INSERT … ON CONFLICT (id) DO NOTHING`` and commit (a redelivered
   event is a no-op), then ``XACK``. The ack comes only after the commit, so a crash in between
   leaves the entry pending: at-least-once, made exactly-once in the table by the event id;
3. every ``claim_interval_s``, ``XAUTOCLAIM`` entries idle longer than ``claim_idle_ms`` (their
   consumer died before acking) and process them the same way.

Poison entries go to the dead-letter stream ``dead_letter_stream`` (the original fields plus
``dead_letter_reason``, ``dead_letter_id`` and ``dead_letter_attempts``) and are then acked:
an entry that is not a Portico event at once, and an entry whose processing failed (PostgreSQL
refused its data, a bug) once its delivery count (``XPENDING``) reaches ``max_attempts``. While
PostgreSQL or Valkey is unreachable nothing is dead-lettered: entries stay pending and the loop
retries with backoff.

Tracing: each entry gets a CONSUMER span ``audit consume <type>``, a new trace *linked* to the
span in the entry's ``traceparent`` (the request that caused the event), so the request's trace
shows up from the audit record and vice versa (``trace_id`` is stored with the row).

Metrics: ``portico_audit_events_total{result=stored|duplicate|dead_lettered}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Counter
from valkey.asyncio import Valkey
from valkey.exceptions import ResponseError, ValkeyError

from portico_audit.config import ConsumerSettings
from portico_audit.domain import AuditRecord, MalformedEventError, parse_entry
from portico_audit.errors import DeadlineExceeded, Unavailable
from portico_audit.repository import CONNECTION_LOST, EventRepository

_log = logging.getLogger(__name__)
_tracer = trace.get_tracer("portico_audit.consumer")
_propagator = TraceContextTextMapPropagator()

#: Failures that say "the store is unreachable now", not "this entry is bad": no dead-letter.
_TRANSIENT = (Unavailable, DeadlineExceeded, *CONNECTION_LOST)

#: Called after an event's commit, before its XACK (tests inject a crash here).
AfterCommit = Callable[[AuditRecord], Awaitable[None]]


@functools.cache
def events_counter() -> Counter:
    """``portico_audit_events_total{result}``: what became of each consumed entry."""
    return Counter(
        "portico_audit_events",
        "Stream entries the audit consumer handled: stored, duplicate (stored before), "
        "dead_lettered (poison, moved to the dead-letter stream).",
        ["result"],
    )


def _decode(fields: Mapping[Any, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in fields.items():
        k = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        v = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        out[k] = v
    return out


def _id(message_id: Any) -> str:
    return message_id.decode() if isinstance(message_id, bytes) else str(message_id)


class EventConsumer:
    """Consumes the event stream into ``repository``; see the module docstring."""

    def __init__(
        self,
        repository: EventRepository,
        client: Valkey,
        settings: ConsumerSettings,
        *,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self._repository = repository
        self._client = client
        self._settings = settings
        self._after_commit = after_commit
        self._stopping = asyncio.Event()

    @property
    def name(self) -> str:
        return self._settings.name

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless it exists."""
        try:
            await self._client.xgroup_create(
                self._settings.stream, self._settings.group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_batch(self) -> int:
        """One XREADGROUP round (blocks up to ``block_ms``); how many entries it handled."""
        s = self._settings
        reply = await self._client.xreadgroup(
            s.group, s.name, {s.stream: ">"}, count=s.batch_size, block=s.block_ms
        )
        entries: list[tuple[Any, Any]] = []
        for _stream, messages in reply or []:
            entries.extend(messages)
        return await self._handle_all(entries)

    async def claim_stale(self) -> int:
        """XAUTOCLAIM entries idle > ``claim_idle_ms`` and handle them; how many it took."""
        s = self._settings
        reply = await self._client.xautoclaim(
            s.stream,
            s.group,
            s.name,
            min_idle_time=s.claim_idle_ms,
            start_id="0-0",
            count=s.batch_size,
        )
        # [next start, [(id, fields), …], deleted ids]; entries trimmed away come as (id, None).
        entries = [(mid, fields) for mid, fields in reply[1] if fields is not None]
        deleted = [mid for mid, fields in reply[1] if fields is None] + list(
            reply[2] if len(reply) > 2 else []
        )
        if deleted:  # trimmed from the stream while pending: nothing left to store
            await self._client.xack(s.stream, s.group, *deleted)
        return await self._handle_all(entries)

    async def _handle_all(self, entries: Sequence[tuple[Any, Any]]) -> int:
        for message_id, fields in entries:
            await self.handle(_id(message_id), _decode(fields))
        return len(entries)

    async def handle(self, message_id: str, fields: Mapping[str, str]) -> str:
        """Store one entry and ack it; its result (``stored``, ``duplicate``,
        ``dead_lettered``), or ``pending`` when it failed and stays for a later attempt.

        Raises the transient failures (PostgreSQL or Valkey unreachable) so the loop backs off.
        """
        carrier = {k: fields[k] for k in ("traceparent", "tracestate") if fields.get(k)}
        linked = trace.get_current_span(_propagator.extract(carrier)).get_span_context()
        links = [Link(linked)] if linked.is_valid else []
        name = f"audit consume {fields.get('type') or 'unknown'}"[:120]
        root = otel_context.Context()  # a new trace, linked (not parented) to the request
        with _tracer.start_as_current_span(
            name,
            context=root,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": "valkey",
                "messaging.destination.name": self._settings.stream,
                "messaging.consumer.group.name": self._settings.group,
                "messaging.message.id": fields.get("id", ""),
            },
        ) as span:
            try:
                record = parse_entry(fields, linked)
            except MalformedEventError as exc:
                await self._dead_letter(message_id, fields, f"malformed: {exc}", attempts=1)
                span.set_attribute("portico.audit.result", "dead_lettered")
                return "dead_lettered"
            try:
                stored = await self._repository.store(record)
                if self._after_commit is not None:
                    await self._after_commit(record)
            except _TRANSIENT:
                raise
            except Exception as exc:  # refused data, a bug: retried until max_attempts
                result = await self._failed(message_id, fields, exc)
                span.set_attribute("portico.audit.result", result)
                return result
            await self._client.xack(self._settings.stream, self._settings.group, message_id)
            result = "stored" if stored else "duplicate"
            events_counter().labels(result).inc()
            span.set_attribute("portico.audit.result", result)
            return result

    async def _failed(self, message_id: str, fields: Mapping[str, str], exc: Exception) -> str:
        s = self._settings
        pending = await self._client.xpending_range(
            s.stream, s.group, min=message_id, max=message_id, count=1
        )
        attempts = int(pending[0]["times_delivered"]) if pending else 1
        reason = f"{type(exc).__name__}: {exc}"
        if attempts >= s.max_attempts:
            await self._dead_letter(message_id, fields, reason, attempts=attempts)
            return "dead_lettered"
        _log.warning(
            "audit: event entry %s failed (attempt %d of %d), left pending: %s",
            message_id,
            attempts,
            s.max_attempts,
            reason,
        )
        return "pending"

    async def _dead_letter(
        self, message_id: str, fields: Mapping[str, str], reason: str, *, attempts: int
    ) -> None:
        s = self._settings
        entry = {
            **fields,
            "dead_letter_reason": reason[:1000],
            "dead_letter_id": message_id,
            "dead_letter_attempts": str(attempts),
        }
        await self._client.xadd(
            s.dead_letter_stream,
            entry,
            maxlen=s.dead_letter_maxlen,
            approximate=True,
        )
        await self._client.xack(s.stream, s.group, message_id)
        events_counter().labels("dead_lettered").inc()
        _log.error(
            "audit: event entry %s moved to %s after %d attempt(s): %s",
            message_id,
            s.dead_letter_stream,
            attempts,
            reason,
        )

    def stop(self) -> None:
        """Finish the current batch, then return from :meth:`run`."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume until :meth:`stop` (or cancellation); failures back off and retry."""
        s = self._settings
        failures = 0
        last_claim = 0.0
        while not self._stopping.is_set():
            try:
                if failures or last_claim == 0.0:
                    await self.ensure_group()  # also after a Valkey restart lost the group
                if time.monotonic() - last_claim >= s.claim_interval_s:
                    last_claim = time.monotonic()
                    await self.claim_stale()
                await self.read_batch()
            except asyncio.CancelledError:
                raise
            except (ValkeyError, *_TRANSIENT, asyncpg.PostgresError) as exc:
                failures += 1
                delay = min(0.1 * 2**failures, s.max_backoff_s)
                _log.warning(
                    "audit consumer failed: %s: %s; retrying in %.1fs",
                    type(exc).__name__,
                    exc,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                continue
            failures = 0
