"""The event consumer: ``portico:events:v1`` → ``audit.events``, each event stored once.

One :class:`EventConsumer` per process, a member (``consumer.name``) of the consumer group
``consumer.group``, created at start with ``XGROUP CREATE … 0 MKSTREAM`` (a new group reads the
stream from its first entry; an existing group keeps its position). Each round:

1. ``XREADGROUP GROUP <group> <name> COUNT <batch_size> BLOCK <block_ms> STREAMS <stream> >``
   (at start and after every failure, e.g. a Valkey failover, first its own pending entries,
   ``XPENDING … <name>``, handled as redeliveries: :meth:`EventConsumer.read_own_pending`);
2. for each entry: parse it, ``INSERT … ON CONFLICT (id) DO NOTHING`` and commit (a redelivered
   event is a no-op), then ``XACK``. The ack comes only after the commit, so a crash in between
   leaves the entry pending: at-least-once, made exactly-once in the table by the event id;
3. every ``claim_interval_s``, take over the entries idle longer than ``claim_idle_ms`` (their
   consumer died before acking, or failed on them): see "Redeliveries" below.

Poison entries go to the dead-letter stream ``dead_letter_stream`` (the original fields plus
``dead_letter_reason``, ``dead_letter_id`` and ``dead_letter_attempts``) and are then acked:

* an entry that is not a Portico event, at once;
* an entry whose processing failed (PostgreSQL refused its data, a bug) once its delivery count
  (``XPENDING``) reaches ``max_attempts``;
* an entry that *kills the process* while it is handled (segfault, OOM kill, ``kill -9``): no
  exception is ever raised for it, so it is recognised by its delivery count when it is taken
  over again: ``delivered N times without being acknowledged (the consumer died while handling
  it)`` once N reaches ``max_attempts`` (at least 2, see below), *without handling it again*.

While PostgreSQL or Valkey is unreachable nothing is dead-lettered: entries stay pending and the
loop retries with backoff.

Redeliveries (``claim_stale``), one batch at a time:

1. ``XPENDING <stream> <group> IDLE <claim_idle_ms> - + <batch_size>``: the stale entries with
   their delivery counts and last owners (one call for the batch);
2. ``XCLAIM … <claim_idle_ms> <ids…> JUSTID``: they are ours now, their delivery counts
   *unchanged* (JUSTID does not count a delivery; entries trimmed from the stream are dropped);
3. PostgreSQL must answer a cheap query (the newest event) before anything is counted or
   dead-lettered; if it does not, the failure is raised and the loop backs off;
4. in stream order: an entry delivered ``max_attempts`` times already goes to the dead-letter
   stream unhandled; any other is charged one delivery right before it is handled (``XCLAIM``
   of that one id, which also returns its fields), and handled as in a first delivery.

So a delivery is counted only for the entry that is being handled at that moment, and only
after PostgreSQL answered. An in-process failure that leaves the entry pending without a
verdict (PostgreSQL or Valkey unreachable, cancellation at shutdown) gives its delivery back
(``XCLAIM … RETRYCOUNT <previous count> JUSTID``). What stays counted is a process that died
while handling the entry, or a failure the entry caused (then ``max_attempts`` applies as
before). Trade-offs, deliberately accepted:

* ``XREADGROUP`` counts a delivery for every entry of the batch at once; when the process dies
  on one of them, the entries after it were never handled but count one delivery. That is why
  this path dead-letters at ``max(max_attempts, 2)``: one phantom delivery alone never
  dead-letters an entry, and with ``max_attempts`` ≥ 2 a good entry would need ``max_attempts
  - 1`` deaths of the process *while handling that very entry*;
* a process killed between the PostgreSQL check and the end of a handling whose store hangs on
  a PostgreSQL that just went away is counted as a death: one delivery per such crash, within
  one batch's time. A crash loop while PostgreSQL stays down counts nothing (every round stops
  at step 3), so it cannot dead-letter good events, before or after PostgreSQL returns;
* the redelivery path costs one extra ``XCLAIM`` per redelivered entry (the normal path costs
  nothing more); redeliveries only follow a dead consumer or a failure.

Tracing: each entry gets a CONSUMER span ``audit consume <type>``, a new trace *linked* to the
span in the entry's ``traceparent`` (the request that caused the event), so the request's trace
shows up from the audit record and vice versa (``trace_id`` is stored with the row).

Metrics: ``portico_audit_events_total{result=stored|duplicate|dead_lettered}``, and the consumer
group's backlog, read with one ``XINFO GROUPS`` every ``backlog_interval_s`` (also while
PostgreSQL is down, when it matters most): ``portico_audit_pending_entries{stream}`` (delivered,
not yet acknowledged) and ``portico_audit_consumer_lag_entries{stream}`` (in the stream, not yet
delivered to the group; only when the server reports it: Valkey ≥ 7.2, and not while it cannot
tell, e.g. after entries were deleted from the middle of the stream). Every replica reports the
same group-wide values: aggregate them with ``max``, not ``sum``.
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
from prometheus_client import Counter, Gauge
from valkey.asyncio import Valkey
from valkey.exceptions import ResponseError, ValkeyError

from portico_audit.config import ConsumerSettings
from portico_audit.domain import AuditRecord, MalformedEventError, parse_entry
from portico_audit.errors import DeadlineExceeded, Unavailable
from portico_audit.repository import EventRepository
from portico_common.postgres import CONNECTION_LOST

_log = logging.getLogger(__name__)
_tracer = trace.get_tracer("portico_audit.consumer")
_propagator = TraceContextTextMapPropagator()

#: Failures that say "the store is unreachable now", not "this entry is bad": no dead-letter.
_TRANSIENT: tuple[type[Exception], ...] = (Unavailable, DeadlineExceeded, *CONNECTION_LOST)
#: What the consume loop backs off from and retries (anything else is a bug: it propagates).
_RETRIED: tuple[type[Exception], ...] = (ValkeyError, *_TRANSIENT, asyncpg.PostgresError)

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


@functools.cache
def backlog_gauges() -> tuple[Gauge, Gauge]:
    """The consumer group's backlog: ``portico_audit_pending_entries{stream}`` (delivered, not
    acknowledged) and ``portico_audit_consumer_lag_entries{stream}`` (not delivered yet)."""
    pending = Gauge(
        "portico_audit_pending_entries",
        "Entries of the event stream delivered to the audit consumer group and not yet "
        "acknowledged (XINFO GROUPS pending; group-wide, every replica reports it).",
        ["stream"],
    )
    lag = Gauge(
        "portico_audit_consumer_lag_entries",
        "Entries of the event stream not yet delivered to the audit consumer group (XINFO "
        "GROUPS lag; group-wide; absent when the server cannot tell).",
        ["stream"],
    )
    return pending, lag


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
        self._finished = asyncio.Event()

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

    async def read_own_pending(self) -> int:
        """This consumer's delivered, unacknowledged entries, handled again in stream order; how
        many it took. Run at start and after every failure (a Valkey restart or a Sentinel
        failover, docs/valkey-ha.md), before new entries: what was in flight when the connection
        broke is finished first instead of waiting ``claim_idle_ms`` for :meth:`claim_stale`.

        Counted as a redelivery is ("Redeliveries" in the module docstring): ``XPENDING … <name>``
        lists them with their delivery counts, nothing is counted unless PostgreSQL answers, and
        each entry is charged one delivery right before it is handled. (``XREADGROUP … 0`` would
        charge every entry of the batch on every retry: a consumer retrying through a PostgreSQL
        outage would wear out good entries until they were dead-lettered.) Entries trimmed
        meanwhile are dropped from the group by the server.
        """
        s = self._settings
        taken = 0
        start = "-"
        while True:
            mine = await self._client.xpending_range(
                s.stream, s.group, min=start, max="+", count=s.batch_size, consumername=s.name
            )
            if not mine:
                return taken
            await self._database_answers()
            await self._take_over(
                [(_id(p["message_id"]), int(p["times_delivered"]), s.name) for p in mine]
            )
            taken += len(mine)
            start = f"({_id(mine[-1]['message_id'])}"  # exclusive: after the last one

    async def claim_stale(self) -> int:
        """Take over entries idle > ``claim_idle_ms`` and handle (or dead-letter) them; how many
        it took. See "Redeliveries" in the module docstring."""
        s = self._settings
        stale = await self._client.xpending_range(
            s.stream, s.group, min="-", max="+", count=s.batch_size, idle=s.claim_idle_ms
        )
        if not stale:
            return 0
        seen = {
            _id(p["message_id"]): (int(p["times_delivered"]), _id(p["consumer"])) for p in stale
        }
        # JUSTID: ours now (nobody else takes them while we work), no delivery counted yet.
        # Entries trimmed from the stream while pending are dropped from the group by the server.
        claimed = [
            _id(mid)
            for mid in await self._client.xclaim(
                s.stream, s.group, s.name, s.claim_idle_ms, list(seen), justid=True
            )
        ]
        if not claimed:
            return 0
        _log.info(
            "audit: took over %d stale entries (from %s)",
            len(claimed),
            ", ".join(sorted({seen[m][1] for m in claimed})),
        )
        # Nothing is counted or dead-lettered unless PostgreSQL answers now: a consumer that
        # crash-loops while PostgreSQL is down must not wear out the delivery counts.
        await self._database_answers()
        await self._take_over([(m, seen[m][0], seen[m][1]) for m in claimed])
        return len(claimed)

    async def _take_over(self, entries: Sequence[tuple[str, int, str]]) -> None:
        """Entries now ours, as (id, delivery count, last owner), in stream order: one delivered
        ``max(max_attempts, 2)`` times already goes to the dead-letter stream unhandled, any
        other is redelivered (:meth:`_redeliver`)."""
        limit = max(self._settings.max_attempts, 2)  # one delivery may be XREADGROUP's, unhandled
        for message_id, delivered, owner in entries:
            if delivered >= limit:
                await self._dead_letter_unacknowledged(message_id, delivered, owner)
            else:
                await self._redeliver(message_id, delivered)

    async def _database_answers(self) -> None:
        """Raise the transient failure unless PostgreSQL answers (the newest event: an index
        read, LIMIT 2)."""
        await self._repository.list_events(page_size=1, after=None)

    async def _redeliver(self, message_id: str, delivered: int) -> None:
        """Count one delivery of ``message_id`` (XCLAIM, which returns its fields), handle it;
        give the delivery back when the handling ended without a verdict."""
        s = self._settings
        reply = await self._client.xclaim(s.stream, s.group, s.name, 0, [message_id])
        if not reply or reply[0][1] is None:
            return  # acknowledged or trimmed meanwhile: nothing left to do
        try:
            await self.handle(message_id, _decode(reply[0][1]))
        except BaseException:  # unreachable store, Valkey, shutdown: not this entry's fault
            await self._give_back(message_id, delivered)
            raise

    async def _give_back(self, message_id: str, delivered: int) -> None:
        s = self._settings
        try:
            await self._client.xclaim(
                s.stream, s.group, s.name, 0, [message_id], retrycount=delivered, justid=True
            )
        except (ValkeyError, OSError) as exc:  # Valkey is failing too: one delivery too many
            _log.warning("audit: cannot reset the delivery count of %s: %s", message_id, exc)

    async def _dead_letter_unacknowledged(
        self, message_id: str, delivered: int, owner: str
    ) -> None:
        s = self._settings
        found = await self._client.xrange(s.stream, min=message_id, max=message_id, count=1)
        if not found:  # trimmed meanwhile
            await self._client.xack(s.stream, s.group, message_id)
            return
        reason = (
            f"delivered {delivered} times without being acknowledged (the consumer died while "
            f"handling it; last delivered to {owner})"
        )
        await self._dead_letter(message_id, _decode(found[0][1]), reason, attempts=delivered)

    async def report_backlog(self) -> None:
        """Set the backlog gauges from ``XINFO GROUPS`` (one call)."""
        s = self._settings
        pending, lag = backlog_gauges()
        for group in await self._client.xinfo_groups(s.stream):
            if _id(group.get("name")) != s.group:
                continue
            pending.labels(s.stream).set(int(group.get("pending") or 0))
            behind = group.get("lag")
            if behind is None:  # an older server, or it cannot tell now
                lag.remove(s.stream)
            else:
                lag.labels(s.stream).set(int(behind))

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

    async def finish(self, grace: float | None) -> None:
        """Stop, and wait up to ``grace`` s for the current batch (the service's before-stop
        hook; what is still running after it is cancelled with the other background tasks:
        its entries stay pending and are claimed later, at-least-once)."""
        self.stop()
        try:
            await asyncio.wait_for(self._finished.wait(), grace)
        except TimeoutError:
            if grace:
                _log.warning("audit consumer did not finish its batch in %ss; cancelling", grace)

    async def run(self) -> None:
        """Consume until :meth:`stop` (or cancellation); failures back off and retry."""
        try:
            await self._consume()
        finally:
            self._finished.set()

    async def _consume(self) -> None:
        s = self._settings
        failures = 0
        last_claim = last_backlog = 0.0
        while not self._stopping.is_set():
            try:
                if failures or last_claim == 0.0:
                    await self.ensure_group()  # also after a Valkey restart lost the group
                    await self.read_own_pending()  # what was in flight when it broke
                if time.monotonic() - last_backlog >= s.backlog_interval_s:
                    last_backlog = time.monotonic()  # first: also while PostgreSQL is down
                    await self.report_backlog()
                if time.monotonic() - last_claim >= s.claim_interval_s:
                    last_claim = time.monotonic()
                    await self.claim_stale()
                await self.read_batch()
            except asyncio.CancelledError:
                raise
            except _RETRIED as exc:
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
