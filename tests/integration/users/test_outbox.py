"""Events: the users service's writes and their outbox rows, and the relay to the Valkey Stream.

Real PostgreSQL and Valkey throughout. The crash test stops a relay between its XADDs and its
commit through the relay's ``after_publish`` hook (a real failure point in the real code path);
"Valkey down" is a client aimed at a port where a real Valkey starts later.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
import valkey.asyncio as valkey_asyncio
from google.protobuf.field_mask_pb2 import FieldMask
from opentelemetry.sdk.trace import TracerProvider

from portico.users.v1 import users_pb2
from portico_common.outbox import NotReplicated, OutboxRelay, OutboxSettings
from portico_devstack.backends import EmbeddedValkey
from portico_users.domain import UserChanges
from portico_users.repository import UserRepository
from tests.support.stores import valkey_client
from tests.support.users import closed_port

if TYPE_CHECKING:
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub

pytestmark = pytest.mark.timeout(30)

STREAM = "portico:events:v1"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def valkey(valkey_url: str) -> AsyncIterator[Any]:
    async with valkey_client(valkey_url) as client:
        yield client


def relay_of(
    pool: asyncpg.Pool[asyncpg.Record], client: Any, *, batch_size: int = 100, **kwargs: Any
) -> OutboxRelay:
    settings = OutboxSettings(batch_size=batch_size, poll_interval_s=0.02, max_backoff_s=0.1)
    return OutboxRelay(pool, client, schema="users", service="users", settings=settings, **kwargs)


async def outbox(pool: asyncpg.Pool[asyncpg.Record]) -> list[asyncpg.Record]:
    return list(await pool.fetch("SELECT * FROM users.outbox ORDER BY seq"))


async def entries(client: Any) -> list[dict[str, str]]:
    """The stream's entries, oldest first, with text fields."""
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in await client.xrange(STREAM)
    ]


async def make_users(pool: asyncpg.Pool[asyncpg.Record], count: int) -> None:
    repository = UserRepository(pool, query_timeout_s=5)
    for n in range(count):
        await repository.create_user(email=f"u{n}@example.com", display_name=f"U{n}")


async def drain(*relays: OutboxRelay) -> None:
    """Run the relays concurrently until nothing is pending."""
    tasks = [asyncio.create_task(relay.run()) for relay in relays]
    try:
        for _ in range(500):
            if not await relays[0].pending():
                break
            await asyncio.sleep(0.02)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_each_write_records_one_event_in_its_transaction_and_failed_writes_none(
    stub: UserServiceAsyncStub, database_url: str
) -> None:
    created = (
        await stub.CreateUser(
            users_pb2.CreateUserRequest(email="ada@example.com", display_name="Ada"), timeout=5
        )
    ).user
    updated = (
        await stub.UpdateUser(
            users_pb2.UpdateUserRequest(
                id=created.id,
                user=users_pb2.UserUpdate(display_name="Ada L."),
                update_mask=FieldMask(paths=["display_name"]),
                etag=created.etag,
            ),
            timeout=5,
        )
    ).user
    with pytest.raises(grpc.aio.AioRpcError) as stale:  # the old etag: nothing changes
        await stub.UpdateUser(
            users_pb2.UpdateUserRequest(
                id=created.id,
                user=users_pb2.UserUpdate(display_name="Nope"),
                update_mask=FieldMask(paths=["display_name"]),
                etag=created.etag,
            ),
            timeout=5,
        )
    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError):  # an unknown user: nothing to record
        await stub.DeleteUser(users_pb2.DeleteUserRequest(id=str(uuid.uuid4())), timeout=5)
    await stub.DeleteUser(users_pb2.DeleteUserRequest(id=created.id, etag=updated.etag), timeout=5)

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT * FROM users.outbox ORDER BY seq")
    finally:
        await conn.close()
    assert [r["type"] for r in rows] == ["user.created", "user.updated", "user.deleted"]
    assert {r["subject"] for r in rows} == {created.id}
    assert all(r["actor"] for r in rows), "the admin token's principal is the actor"
    assert len({r["id"] for r in rows}) == 3
    payloads = [json.loads(r["payload"]) for r in rows]
    assert payloads == [
        {"email": "ada@example.com", "display_name": "Ada", "version": 1},
        {"fields": {"display_name": "Ada L."}, "version": 2},
        {},
    ]


async def test_a_change_and_its_event_commit_together(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    repository = UserRepository(pool, query_timeout_s=5)
    await repository.create_user(email="dup@example.com", display_name="One")
    with pytest.raises(Exception, match="already exists"):
        await repository.create_user(email="DUP@example.com", display_name="Two")
    user = await repository.create_user(email="x@example.com", display_name="X")
    await repository.update_user(
        user_id=user.id, changes=UserChanges(email="y@example.com"), etag=None, actor="u-1"
    )
    rows = await outbox(pool)
    assert [r["type"] for r in rows] == ["user.created", "user.created", "user.updated"]
    assert rows[2]["actor"] == "u-1"
    assert await pool.fetchval("SELECT count(*) FROM users.users") == 2


async def test_the_relay_publishes_in_seq_order_marks_rows_and_carries_the_trace(
    pool: asyncpg.Pool[asyncpg.Record], valkey: Any
) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        await make_users(pool, 3)
    trace_id = format(span.get_span_context().trace_id, "032x")
    relay = relay_of(pool, valkey, batch_size=2)

    assert await relay.pending() == 3
    assert await relay.publish_batch() == 2
    assert await relay.publish_batch() == 1
    assert await relay.publish_batch() == 0

    rows = await outbox(pool)
    published = await entries(valkey)
    assert [e["id"] for e in published] == [str(r["id"]) for r in rows]
    assert [int(e["seq"]) for e in published] == sorted(r["seq"] for r in rows)
    assert all(r["published_at"] is not None for r in rows)
    first = published[0]
    assert first["type"] == "user.created"
    assert first["service"] == "users"
    assert first["subject"] == str(rows[0]["subject"])
    assert json.loads(first["payload"])["email"] == "u0@example.com"
    assert first["traceparent"].split("-")[1] == trace_id
    assert json.loads(rows[0]["trace_context"])["traceparent"] == first["traceparent"]
    assert await relay.pending() == 0


async def test_two_relays_publish_every_event_exactly_once(
    pool: asyncpg.Pool[asyncpg.Record], valkey: Any
) -> None:
    await make_users(pool, 40)
    await drain(relay_of(pool, valkey, batch_size=3), relay_of(pool, valkey, batch_size=3))

    rows = await outbox(pool)
    published = await entries(valkey)
    assert await valkey.xlen(STREAM) == 40
    assert [e["id"] for e in published] == [str(r["id"]) for r in rows]  # once each, in order
    assert all(r["published_at"] is not None for r in rows)


async def test_a_relay_that_dies_after_xadd_publishes_again_at_least_once(
    pool: asyncpg.Pool[asyncpg.Record], valkey: Any
) -> None:
    await make_users(pool, 3)

    async def crash(rows: Sequence[Any]) -> None:
        raise RuntimeError("killed between XADD and commit")

    with pytest.raises(RuntimeError, match="killed"):
        await relay_of(pool, valkey, after_publish=crash).publish_batch()
    assert await valkey.xlen(STREAM) == 3
    assert all(r["published_at"] is None for r in await outbox(pool))

    assert await relay_of(pool, valkey).publish_batch() == 3
    ids = [e["id"] for e in await entries(valkey)]
    assert len(ids) == 6
    assert ids[:3] == ids[3:], "the same events again, with the same ids (consumers dedupe)"
    assert all(r["published_at"] is not None for r in await outbox(pool))


async def test_while_valkey_is_down_events_stay_pending_then_are_published(
    pool: asyncpg.Pool[asyncpg.Record], tmp_path: Path
) -> None:
    await make_users(pool, 2)
    port = closed_port()
    client: Any = valkey_asyncio.from_url(  # type: ignore[no-untyped-call]
        f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.2, socket_timeout=0.5
    )
    relay = relay_of(pool, client)
    task = asyncio.create_task(relay.run())
    server = EmbeddedValkey(tmp_path / "valkey", port=port)
    try:
        await asyncio.sleep(0.5)  # several failed rounds
        assert not task.done()
        assert await relay.pending() == 2
        await asyncio.to_thread(server.start)
        for _ in range(100):
            if await relay.pending() == 0:
                break
            await asyncio.sleep(0.05)
        assert await relay.pending() == 0
        assert await client.xlen(STREAM) == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
        await asyncio.to_thread(server.stop)


async def test_the_service_stops_within_its_budget_with_its_database_gone(
    database_url: str, postgres_admin_dsn: str, valkey_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop never waits on the relay's retry loop (CI once hung here until pytest-timeout).

    The test's database is dropped under the running service, as its fixture does at teardown:
    the relay and the pool then fail and retry. Stopping must still end every background task
    and close the pool within the stop budget.
    """
    from portico_common.tasks import STOP_BUDGET_S
    from portico_users.server import start
    from tests.support.users import users_settings

    running = await start(
        users_settings(
            database_url=database_url,
            valkey_url=valkey_url,
            outbox=OutboxSettings(poll_interval_s=0.02, max_backoff_s=0.1),
        )
    )
    name = urlsplit(database_url).path.lstrip("/")
    conn = await asyncpg.connect(postgres_admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await conn.close()
    for _ in range(200):  # the relay has noticed: it is in its retry loop now
        if "outbox relay (users) failed" in caplog.text:
            break
        await asyncio.sleep(0.05)
    assert "outbox relay (users) failed" in caplog.text

    loop = asyncio.get_running_loop()
    started = loop.time()
    # The budget of the background tasks, plus the pool's close: generous for a slow machine,
    # far below the pytest timeout a hang would reach.
    await asyncio.wait_for(running.stop(0), STOP_BUDGET_S + 10.0)
    assert loop.time() - started < STOP_BUDGET_S + 10.0
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("users-")]
    assert not left


async def test_a_batch_no_replica_acknowledged_stays_unpublished_and_is_sent_again(
    pool: asyncpg.Pool[asyncpg.Record], valkey: Any
) -> None:
    # The test Valkey has no replica: WAIT 1 answers 0 after its timeout, so the batch must be
    # rolled back (sent again later), never marked published (docs/valkey-ha.md).
    await make_users(pool, 2)
    settings = OutboxSettings(replica_acks=1, replica_ack_timeout_ms=50)
    waiting = OutboxRelay(pool, valkey, schema="users", service="users", settings=settings)
    with pytest.raises(NotReplicated, match="0 of 1 replica"):
        await waiting.publish_batch()
    assert await waiting.pending() == 2
    assert len(await entries(valkey)) == 2  # XADDed, not yet acknowledged by a replica

    await drain(relay_of(pool, valkey))  # replica_acks=0: the same rows, published again
    assert [e["id"] for e in await entries(valkey)][2:] == [
        str(r["id"]) for r in await outbox(pool)
    ]
