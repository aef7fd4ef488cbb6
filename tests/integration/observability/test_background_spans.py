"""Background work is not traced: the outbox relay polls five times a second, idle or not.

With asyncpg instrumented (this package's ``span_exporter``), every query of a relay round would
otherwise be a trace of its own: an idle ``make run`` stack exported about 70 such single-span
traces a second from users and auth. Here a real relay publishes a real outbox row while the
in-memory exporter watches; a query made outside the relay is traced, as the control.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import valkey.asyncio as valkey_asyncio
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from portico_common.outbox import OutboxRelay, OutboxSettings
from portico_users.repository import UserRepository

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


async def test_relay_rounds_make_no_spans_and_other_queries_still_do(
    spans: InMemorySpanExporter, pool: asyncpg.Pool[asyncpg.Record], valkey_url: str
) -> None:
    await UserRepository(pool, query_timeout_s=5).create_user(
        email="traced@example.com", display_name="T"
    )
    client: Any = valkey_asyncio.from_url(valkey_url)  # type: ignore[no-untyped-call]
    settings = OutboxSettings(poll_interval_s=0.02, max_backoff_s=0.1)
    relay = OutboxRelay(pool, client, schema="users", service="users", settings=settings)
    spans.clear()  # the create above is traced: it is a request's work, not background
    running = asyncio.create_task(relay.run())
    try:
        for _ in range(500):  # 10 s at most
            if await client.xlen(settings.stream) >= 1:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the relay published nothing in 10 s")
        await asyncio.sleep(0.3)  # about fifteen idle rounds more
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await client.aclose()
    relay_spans = [s.name for s in spans.get_finished_spans()]
    unpublished = "SELECT count(*) FROM users.outbox WHERE published_at IS NULL"
    assert await pool.fetchval(unpublished) == 0  # the relay did publish the row
    assert relay_spans == []
    statements = [s.attributes["db.statement"] for s in spans.get_finished_spans() if s.attributes]
    assert unpublished in statements  # the control: a query outside the relay is traced
