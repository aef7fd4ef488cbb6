"""The audit consumer on real PostgreSQL and Valkey: stored once, claims, dead letters (also of
entries that kill the consumer), no dead letters while PostgreSQL is down, backlog gauges."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY

from portico.users.v1 import users_pb2, users_pb2_grpc
from portico_audit.config import ConsumerSettings
from portico_audit.consumer import EventConsumer
from portico_audit.domain import AuditRecord
from portico_audit.errors import Unavailable
from portico_audit.repository import EventRepository
from portico_audit.server import RunningServer as AuditServer
from portico_users.server import RunningServer as UsersServer
from tests.support.audit import DEAD, STREAM, entry
from tests.support.stores import valkey_client
from tests.support.tokens import Tokens, bearer

pytestmark = pytest.mark.integration

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
async def valkey(valkey_url: str) -> AsyncIterator[Any]:
    async with valkey_client(valkey_url) as client:
        yield client


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


def consumer(
    pool: asyncpg.Pool[asyncpg.Record],
    valkey: Any,
    name: str,
    *,
    after_commit: Callable[[AuditRecord], Awaitable[None]] | None = None,
    **settings: Any,
) -> EventConsumer:
    values: dict[str, Any] = {"name": name, "block_ms": 50, "claim_idle_ms": 100} | settings
    return EventConsumer(
        EventRepository(pool, query_timeout_s=5.0),
        valkey,
        ConsumerSettings(**values),
        after_commit=after_commit,
    )


async def rows(pool: asyncpg.Pool[asyncpg.Record], event_id: str) -> int:
    return int(
        await pool.fetchval("SELECT count(*) FROM audit.events WHERE id = $1", uuid.UUID(event_id))
    )


async def pending(valkey: Any) -> int:
    return int((await valkey.xpending(STREAM, "audit"))["pending"])


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 10.0) -> None:
    end = asyncio.get_running_loop().time() + within_s
    while not await check():
        assert asyncio.get_running_loop().time() < end, "condition never became true"
        await asyncio.sleep(0.05)


async def test_user_changes_through_the_users_relay_are_recorded_once_each(
    users_server: UsersServer, audit_server: AuditServer, tokens: Tokens, database_url: str
) -> None:
    admin = bearer(await tokens.admin())
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as db:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{users_server.port}") as channel:
            stub = users_pb2_grpc.UserServiceStub(channel)
            created = await stub.CreateUser(
                users_pb2.CreateUserRequest(email="ada@example.com", display_name="Ada"),
                metadata=admin,
                timeout=5,
            )
            await stub.DeleteUser(
                users_pb2.DeleteUserRequest(id=created.user.id), metadata=admin, timeout=5
            )

        async def recorded() -> bool:
            types = await db.fetch(
                "SELECT type FROM audit.events WHERE subject = $1", created.user.id
            )
            return sorted(r["type"] for r in types) == ["user.created", "user.deleted"]

        await eventually(recorded)
        row = await db.fetchrow(
            "SELECT service, payload FROM audit.events WHERE type = 'user.created'"
        )
        assert row is not None
        assert row["service"] == "users"
        assert '"ada@example.com"' in row["payload"]


async def test_a_redelivered_event_is_stored_once_and_acked(
    pool: asyncpg.Pool[asyncpg.Record], valkey: Any
) -> None:
    one = consumer(pool, valkey, "a")
    await one.ensure_group()
    event = entry(traceparent=TRACEPARENT)
    await valkey.xadd(STREAM, event)
    await valkey.xadd(STREAM, event)  # the relay published it again (same id)
    assert await one.read_batch() == 2
    assert await rows(pool, event["id"]) == 1
    assert await pending(valkey) == 0
    trace_id = await pool.fetchval(
        "SELECT trace_id FROM audit.events WHERE id = $1", uuid.UUID(event["id"])
    )
    assert trace_id == "0af7651916cd43dd8448eb211c80319c"  # the request that caused it


async def test_a_crash_after_commit_before_ack_is_claimed_by_another_consumer(
    pool: asyncpg.Pool[asyncpg.Record], valkey: Any
) -> None:
    async def crash(record: AuditRecord) -> None:
        raise RuntimeError("process died between COMMIT and XACK")

    dying = consumer(pool, valkey, "dying", after_commit=crash)
    await dying.ensure_group()
    event = entry()
    await valkey.xadd(STREAM, event)
    await dying.read_batch()
    assert await rows(pool, event["id"]) == 1  # committed ...
    assert await pending(valkey) == 1  # ... but never acknowledged

    survivor = consumer(pool, valkey, "survivor")
    assert await survivor.claim_stale() == 0  # not idle long enough yet
    await asyncio.sleep(0.15)
    assert await survivor.claim_stale() == 1
    assert await rows(pool, event["id"]) == 1  # the redelivery was a no-op
    assert await pending(valkey) == 0


async def test_poison_entries_are_dead_lettered_and_acked(
    pool: asyncpg.Pool[asyncpg.Record], valkey: Any
) -> None:
    one = consumer(pool, valkey, "a", max_attempts=2)
    await one.ensure_group()
    await valkey.xadd(STREAM, {"hello": "world"})  # not an event at all: at once
    refused = entry(subject="nul\x00byte")  # PostgreSQL refuses text with NUL: on every attempt
    await valkey.xadd(STREAM, refused)
    await one.read_batch()
    assert await valkey.xlen(DEAD) == 1
    assert await pending(valkey) == 1  # the refused one, attempt 1 of 2
    await asyncio.sleep(0.15)
    await one.claim_stale()  # attempt 2 of 2
    assert await pending(valkey) == 0
    dead = await valkey.xrange(DEAD)
    reasons = [fields[b"dead_letter_reason"].decode() for _, fields in dead]
    assert reasons[0].startswith("malformed: id is not a UUID")
    assert dead[1][1][b"id"].decode() == refused["id"]
    assert dead[1][1][b"dead_letter_attempts"] == b"2"
    assert await rows(pool, refused["id"]) == 0


async def test_stopping_finishes_the_batch_and_returns(
    pool: asyncpg.Pool[asyncpg.Record], valkey: Any
) -> None:
    one = consumer(pool, valkey, "a")
    running = asyncio.create_task(one.run())
    events = [entry() for _ in range(5)]
    for event in events:
        await valkey.xadd(STREAM, event)

    async def all_stored() -> bool:
        return all([await rows(pool, e["id"]) == 1 for e in events])

    await eventually(all_stored)
    one.stop()
    await asyncio.wait_for(running, 2)
    assert await pending(valkey) == 0


async def delivered(valkey: Any, message_id: str) -> int:
    """The entry's delivery count in the group (XPENDING), 0 once it is acknowledged."""
    found = await valkey.xpending_range(STREAM, "audit", min=message_id, max=message_id, count=1)
    return int(found[0]["times_delivered"]) if found else 0


class Freezer:
    """An ``after_commit`` hook that freezes the consumer for good on one event, like a process
    SIGKILLed while handling it: it never acks, never runs another line, never gives anything
    back. Its task is cancelled only at the end of the test, after every check."""

    def __init__(self, event_id: str) -> None:
        self.event_id = uuid.UUID(event_id)
        self.reached = asyncio.Event()
        self.tasks: list[asyncio.Task[int]] = []

    async def __call__(self, record: AuditRecord) -> None:
        if record.id == self.event_id:
            self.reached.set()
            await asyncio.Event().wait()  # never set

    async def die_in(self, step: Awaitable[int]) -> None:
        """Run ``step`` (a read or a claim) until the consumer froze on the event."""
        self.reached.clear()
        self.tasks.append(asyncio.ensure_future(step))
        await asyncio.wait_for(self.reached.wait(), 5)

    async def bury(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_an_entry_that_kills_the_consumer_is_dead_lettered_after_max_attempts(
    pool: asyncpg.Pool[asyncpg.Record], valkey: Any
) -> None:
    poison, healthy = entry(), entry()
    freezer = Freezer(poison["id"])
    try:
        first = consumer(pool, valkey, "dying-1", after_commit=freezer, max_attempts=3)
        await first.ensure_group()
        poison_id = (await valkey.xadd(STREAM, poison)).decode()
        healthy_id = (await valkey.xadd(STREAM, healthy)).decode()
        await freezer.die_in(first.read_batch())  # delivery 1: dies on the poison
        assert await rows(pool, healthy["id"]) == 0  # read in the same batch, never reached

        for attempt in (2, 3):  # a new process (new name) takes over each time, and dies again
            await asyncio.sleep(0.15)
            successor = consumer(pool, valkey, f"dying-{attempt}", after_commit=freezer)
            await freezer.die_in(successor.claim_stale())
            assert await delivered(valkey, poison_id) == attempt
            # The healthy entry, taken over with it, was not charged for the deaths.
            assert await delivered(valkey, healthy_id) == 1

        await asyncio.sleep(0.15)
        survivor = consumer(pool, valkey, "survivor", max_attempts=3)
        assert await survivor.claim_stale() == 2
    finally:
        await freezer.bury()

    dead = await valkey.xrange(DEAD)
    assert len(dead) == 1
    fields = {k.decode(): v.decode() for k, v in dead[0][1].items()}
    assert fields["id"] == poison["id"]
    assert fields["dead_letter_id"] == poison_id
    assert fields["dead_letter_attempts"] == "3"
    assert fields["dead_letter_reason"].startswith(
        "delivered 3 times without being acknowledged (the consumer died while handling it"
    )
    assert await rows(pool, healthy["id"]) == 1  # stored exactly once
    assert await rows(pool, poison["id"]) == 1  # committed before each death: one row still
    assert await pending(valkey) == 0


async def test_a_crash_loop_while_postgres_is_down_dead_letters_nothing(
    pool: asyncpg.Pool[asyncpg.Record], valkey: Any, postgres_admin_dsn: str, database_url: str
) -> None:
    database = urlsplit(database_url).path.lstrip("/")
    event = entry()
    first = consumer(pool, valkey, "first", max_attempts=2)
    await first.ensure_group()
    message_id = (await valkey.xadd(STREAM, event)).decode()

    admin = await asyncpg.connect(postgres_admin_dsn)
    try:  # PostgreSQL refuses new connections to this database; the pool's are closed
        await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        await pool.expire_connections()
        with pytest.raises(Unavailable):
            await first.read_batch()
        for restart in range(4):  # each process takes over, fails on PostgreSQL, is restarted
            await asyncio.sleep(0.15)
            with pytest.raises(Unavailable):
                await consumer(pool, valkey, f"restart-{restart}", max_attempts=2).claim_stale()
            assert await delivered(valkey, message_id) == 1
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
        await admin.close()

    async def gone(record: AuditRecord) -> None:  # PostgreSQL went away after the check
        raise Unavailable("PostgreSQL does not answer: ConnectionRefusedError")

    for restart in range(3):  # a failure in the middle of handling gives the delivery back
        await asyncio.sleep(0.15)
        with pytest.raises(Unavailable):
            await consumer(pool, valkey, f"flaky-{restart}", after_commit=gone).claim_stale()
        assert await delivered(valkey, message_id) == 1

    await asyncio.sleep(0.15)
    assert await consumer(pool, valkey, "back", max_attempts=2).claim_stale() == 1
    assert await rows(pool, event["id"]) == 1
    assert await pending(valkey) == 0
    assert await valkey.xlen(DEAD) == 0


async def test_a_consumer_stuck_on_an_unanswering_postgres_has_counted_no_delivery(
    valkey: Any,
) -> None:
    """Killed at that moment, it must not have charged the entry a delivery."""
    peers: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)  # accepts the connection, never says a word

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    hanging = await asyncpg.create_pool(f"postgresql://audit@127.0.0.1:{port}/audit", min_size=0)
    try:
        stuck = consumer(hanging, valkey, "stuck")
        await stuck.ensure_group()
        message_id = (await valkey.xadd(STREAM, entry())).decode()
        await valkey.xreadgroup("audit", "died", {STREAM: ">"}, count=1)  # delivery 1, no ack
        await asyncio.sleep(0.15)
        claiming = asyncio.create_task(stuck.claim_stale())
        await asyncio.sleep(0.3)
        assert not claiming.done()  # waiting for PostgreSQL
        assert await delivered(valkey, message_id) == 1
        claiming.cancel()
        with pytest.raises(asyncio.CancelledError):
            await claiming
        assert await delivered(valkey, message_id) == 1
        assert await valkey.xlen(DEAD) == 0
    finally:
        hanging.terminate()
        for peer in peers:
            peer.close()
        silent.close()
        await silent.wait_closed()


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"stream": STREAM})


async def test_the_backlog_gauges_show_pending_entries_and_lag(
    pool: asyncpg.Pool[asyncpg.Record], valkey: Any
) -> None:
    one = consumer(pool, valkey, "a", backlog_interval_s=0.05, claim_interval_s=0.1)
    await one.ensure_group()
    events = [entry() for _ in range(5)]
    for event in events:
        await valkey.xadd(STREAM, event)
    await valkey.xreadgroup("audit", "elsewhere", {STREAM: ">"}, count=2)  # 2 delivered, no ack
    await one.report_backlog()
    assert gauge("portico_audit_pending_entries") == 2
    assert gauge("portico_audit_consumer_lag_entries") == 3  # Valkey >= 7.2 reports the lag

    running = asyncio.create_task(one.run())  # takes the 3, claims the 2, updates the gauges

    async def drained() -> bool:
        return (
            gauge("portico_audit_pending_entries") == 0
            and gauge("portico_audit_consumer_lag_entries") == 0
        )

    await eventually(drained)
    one.stop()
    await asyncio.wait_for(running, 2)
    assert all([await rows(pool, e["id"]) == 1 for e in events])


#: Longer than any test: the stale-entry claim (claim_stale) never takes an entry here, so what
#: is handled was re-read by the consumer itself (read_own_pending).
NEVER_IDLE_ENOUGH_MS = 3_600_000


async def each_stored_once(
    pool: asyncpg.Pool[asyncpg.Record],
    valkey: Any,
    events: list[dict[str, str]],
    running: tuple[EventConsumer, asyncio.Task[None]],
) -> None:
    """Wait until every event is stored and nothing is pending, stop the running consumer; then
    each event has exactly one row and nothing was dead-lettered."""

    async def all_stored() -> bool:
        return all([await rows(pool, e["id"]) == 1 for e in events])

    await eventually(all_stored, within_s=30)
    await eventually(lambda: _equal(pending(valkey), 0), within_s=30)
    running[0].stop()
    await asyncio.wait_for(running[1], 10)
    assert [await rows(pool, e["id"]) for e in events] == [1] * len(events)
    assert await valkey.xlen(DEAD) == 0


Switch = Callable[[bool], Awaitable[None]]


@pytest.fixture
async def connections(postgres_admin_dsn: str, database_url: str) -> AsyncIterator[Switch]:
    """``await connections(False)``: PostgreSQL refuses new connections to the test's database
    (``True`` again; always at the end)."""
    database = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(postgres_admin_dsn)

    async def allow(on: bool) -> None:
        await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(on).lower()}')

    try:
        yield allow
    finally:
        await allow(True)
        await admin.close()


def consumer_failures(caplog: pytest.LogCaptureFixture) -> int:
    """How many times the consume loop failed and backed off (its warning)."""
    return sum(1 for r in caplog.records if "audit consumer failed" in r.getMessage())


async def test_a_restarted_consumer_finishes_what_its_predecessor_left_pending(
    pool: asyncpg.Pool[asyncpg.Record], valkey: Any
) -> None:
    """The process died in the middle of a batch (after one commit, before its ack); the new
    process, with the same consumer name, handles the whole batch once it starts, each event
    exactly once in the table, without waiting ``claim_idle_ms``."""
    batch = [entry() for _ in range(3)]
    freezer = Freezer(batch[0]["id"])
    try:
        dying = consumer(pool, valkey, "audit-0", after_commit=freezer)
        await dying.ensure_group()
        for event in batch:
            await valkey.xadd(STREAM, event)
        await freezer.die_in(dying.read_batch())  # committed the first, acked nothing
        assert await pending(valkey) == 3
        assert [await rows(pool, e["id"]) for e in batch] == [1, 0, 0]

        restarted = consumer(pool, valkey, "audit-0", claim_idle_ms=NEVER_IDLE_ENOUGH_MS)
        running = asyncio.create_task(restarted.run())
        later = entry()
        await valkey.xadd(STREAM, later)
        await each_stored_once(pool, valkey, [*batch, later], (restarted, running))
    finally:
        await freezer.bury()


async def test_a_consumer_that_failed_mid_batch_handles_the_rest_once_it_reconnects(
    pool: asyncpg.Pool[asyncpg.Record],
    valkey: Any,
    connections: Switch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL goes away after the first event of a batch: the consumer fails on the second,
    backs off and reconnects; once PostgreSQL is back it handles the rest of that batch (its own
    pending entries), each event exactly once, without waiting ``claim_idle_ms``."""
    caplog.set_level(logging.WARNING, logger="portico_audit.consumer")
    batch = [entry() for _ in range(4)]
    cut = asyncio.Event()

    async def postgres_goes_away(record: AuditRecord) -> None:
        if record.id == uuid.UUID(batch[0]["id"]) and not cut.is_set():
            await connections(False)
            await pool.expire_connections()
            cut.set()

    one = consumer(
        pool,
        valkey,
        "audit-0",
        after_commit=postgres_goes_away,
        claim_idle_ms=NEVER_IDLE_ENOUGH_MS,
        max_backoff_s=0.5,
    )
    await one.ensure_group()
    for event in batch:
        await valkey.xadd(STREAM, event)
    running = asyncio.create_task(one.run())
    await asyncio.wait_for(cut.wait(), 10)
    await eventually(lambda: asyncio.sleep(0, consumer_failures(caplog) > 0), within_s=30)
    assert await pending(valkey) == 3  # the first was acked; the rest wait
    await connections(True)
    await each_stored_once(pool, valkey, batch, (one, running))


async def test_retrying_its_own_pending_entries_through_an_outage_counts_no_delivery(
    pool: asyncpg.Pool[asyncpg.Record],
    valkey: Any,
    connections: Switch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While PostgreSQL is down the consumer retries, re-reading its own pending entries each
    time; none of those rounds may charge a delivery (or a long outage would dead-letter good
    events once the process dies or an entry fails once), and all are stored once it is back."""
    caplog.set_level(logging.WARNING, logger="portico_audit.consumer")
    batch = [entry() for _ in range(2)]
    one = consumer(
        pool,
        valkey,
        "audit-0",
        claim_idle_ms=NEVER_IDLE_ENOUGH_MS,
        max_backoff_s=0.2,
        max_attempts=2,
    )
    await one.ensure_group()
    ids = [(await valkey.xadd(STREAM, event)).decode() for event in batch]
    await connections(False)
    await pool.expire_connections()
    with pytest.raises(Unavailable):
        await one.read_batch()  # delivered once each, stored nowhere
    running = asyncio.create_task(one.run())
    await eventually(lambda: asyncio.sleep(0, consumer_failures(caplog) >= 4), within_s=30)
    assert [await delivered(valkey, i) for i in ids] == [1, 1]
    await connections(True)
    await each_stored_once(pool, valkey, batch, (one, running))


async def _equal(value: Awaitable[int], wanted: int) -> bool:
    return await value == wanted
