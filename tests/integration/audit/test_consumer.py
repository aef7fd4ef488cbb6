"""The audit consumer on real PostgreSQL and Valkey: stored once, claims, dead letters."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import pytest
import valkey.asyncio as valkey_asyncio

from portico.users.v1 import users_pb2, users_pb2_grpc
from portico_audit.config import ConsumerSettings
from portico_audit.consumer import EventConsumer
from portico_audit.domain import AuditRecord
from portico_audit.repository import EventRepository
from portico_audit.server import RunningServer as AuditServer
from portico_users.server import RunningServer as UsersServer
from tests.integration.audit.support import DEAD, STREAM, entry
from tests.integration.tokens import Tokens, bearer

pytestmark = pytest.mark.integration

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
async def valkey(valkey_url: str) -> AsyncIterator[Any]:
    client: Any = valkey_asyncio.from_url(valkey_url)  # type: ignore[no-untyped-call]
    try:
        yield client
    finally:
        await client.aclose()


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
