"""The Valkey read-through cache: hits, coherence on writes, the stale write-back race,
single-flight loading, and running without Valkey."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
import grpc
import pytest
import valkey.asyncio as valkey_asyncio

from portico.users.v1 import users_pb2, users_pb2_grpc
from portico_common.config import get_session_store_settings
from portico_users.cache import CachedUsers
from portico_users.codec import user_to_proto
from portico_users.domain import User, UserChanges
from portico_users.errors import NotFound
from portico_users.repository import UserRepository
from portico_users.server import start
from tests.support.users import closed_port, users_settings

if TYPE_CHECKING:
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub


class CountingRepository:
    """A spy around the real repository: counts get_user calls, can hold them at a gate."""

    def __init__(self, inner: UserRepository) -> None:
        self.inner = inner
        self.gets = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def get_user(self, *, user_id: UUID, time_left: float | None = None) -> User:
        self.gets += 1
        await self.gate.wait()
        return await self.inner.get_user(user_id=user_id, time_left=time_left)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class Stack:
    spy: CountingRepository
    cache: CachedUsers
    valkey: Any


@pytest.fixture
async def stack(database_url: str, valkey_url: str) -> AsyncIterator[Stack]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=5)
    client: Any = valkey_asyncio.from_url(valkey_url)  # type: ignore[no-untyped-call]
    spy = CountingRepository(UserRepository(pool, query_timeout_s=5))
    cache = CachedUsers(spy, client, ttl_s=60, tombstone_ttl_s=30, key_prefix="t:")
    try:
        yield Stack(spy, cache, client)
    finally:
        await client.aclose()
        await pool.close()


async def test_second_read_is_served_from_valkey(stack: Stack) -> None:
    user = await stack.cache.create_user(email="c@example.com", display_name="C")

    first = await stack.cache.get_user(user_id=user.id)
    second = await stack.cache.get_user(user_id=user.id)

    assert first == second == user
    assert stack.spy.gets == 1
    cached = await stack.valkey.hget(stack.cache.key(user.id), "d")
    assert users_pb2.User.FromString(cached) == user_to_proto(user)  # protobuf bytes


async def test_update_and_delete_make_the_next_read_current(stack: Stack) -> None:
    user = await stack.cache.create_user(email="u@example.com", display_name="Old")
    await stack.cache.get_user(user_id=user.id)  # cached

    updated = await stack.cache.update_user(
        user_id=user.id, changes=UserChanges(display_name="New"), etag=user.etag
    )
    assert await stack.cache.get_user(user_id=user.id) == updated

    await stack.cache.delete_user(user_id=user.id, etag=None)
    with pytest.raises(NotFound):
        await stack.cache.get_user(user_id=user.id)


async def test_a_slow_reader_cannot_write_back_an_older_row(stack: Stack) -> None:
    user = await stack.cache.create_user(email="s@example.com", display_name="V1")
    stale = await stack.spy.inner.get_user(user_id=user.id)  # the slow reader's load: version 1
    updated = await stack.cache.update_user(
        user_id=user.id, changes=UserChanges(display_name="V2"), etag=None
    )

    assert await stack.cache.store(stale) is False  # the late fill is refused
    assert await stack.cache.get_user(user_id=user.id) == updated
    assert stack.spy.gets == 0  # and the current row was served from the cache

    await stack.cache.delete_user(user_id=user.id, etag=None)
    assert await stack.cache.store(updated) is False  # the tombstone refuses resurrection
    with pytest.raises(NotFound):
        await stack.cache.get_user(user_id=user.id)


async def test_concurrent_misses_load_from_postgresql_once(stack: Stack) -> None:
    user = await stack.cache.create_user(email="f@example.com", display_name="F")
    stack.spy.gate.clear()

    readers = [asyncio.create_task(stack.cache.get_user(user_id=user.id)) for _ in range(20)]
    await asyncio.sleep(0.1)  # every reader has missed and is waiting on the one load
    stack.spy.gate.set()
    results = await asyncio.gather(*readers)

    assert stack.spy.gets == 1
    assert all(r == user for r in results)


async def test_concurrent_misses_share_a_not_found(stack: Stack) -> None:
    missing = UUID(int=7)
    stack.spy.gate.clear()
    readers = [asyncio.create_task(stack.cache.get_user(user_id=missing)) for _ in range(5)]
    await asyncio.sleep(0.05)
    stack.spy.gate.set()

    results = await asyncio.gather(*readers, return_exceptions=True)

    assert stack.spy.gets == 1
    assert all(isinstance(r, NotFound) for r in results)


async def test_the_store_works_when_valkey_is_down(database_url: str) -> None:
    """Cache operations that fail fall back to PostgreSQL: reads, writes and deletes work."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    client: Any = valkey_asyncio.from_url(  # type: ignore[no-untyped-call]
        f"redis://127.0.0.1:{closed_port()}/0", socket_timeout=0.2, socket_connect_timeout=0.2
    )
    cache = CachedUsers(
        UserRepository(pool, query_timeout_s=5),
        client,
        ttl_s=60,
        tombstone_ttl_s=30,
        key_prefix="t:",
    )
    try:
        user = await cache.create_user(email="v@example.com", display_name="V")
        for _ in range(2):
            assert await cache.get_user(user_id=user.id) == user
        changed = await cache.update_user(
            user_id=user.id, changes=UserChanges(display_name="W"), etag=None
        )
        assert (await cache.get_user(user_id=user.id)).display_name == "W" == changed.display_name
        await cache.delete_user(user_id=user.id, etag=None)
        with pytest.raises(NotFound):
            await cache.get_user(user_id=user.id)
    finally:
        await client.aclose()
        await pool.close()


@pytest.fixture
def session_store_mode(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Sets ``PORTICO_SESSION_STORE_FAIL_MODE`` for servers started after the call."""

    def set_mode(mode: str) -> None:
        monkeypatch.setenv("PORTICO_SESSION_STORE_FAIL_MODE", mode)
        get_session_store_settings.cache_clear()

    yield set_mode
    monkeypatch.delenv("PORTICO_SESSION_STORE_FAIL_MODE", raising=False)
    get_session_store_settings.cache_clear()


@pytest.mark.parametrize("mode", ["degraded", "closed"])
async def test_rpcs_when_sessions_cannot_be_checked(
    database_url: str, tokens: Any, mode: str, session_store_mode: Callable[[str], None]
) -> None:
    """Valkey also holds the sessions. Degraded (the default): a read is served from
    PostgreSQL on the token's signature, a write by a session this process never saw alive is
    UNAVAILABLE (retryable). Closed: every token-bearing call is UNAVAILABLE."""
    session_store_mode(mode)
    settings = users_settings(
        database_url=database_url, valkey_url=f"redis://127.0.0.1:{closed_port()}/0"
    )
    running = await start(settings)
    missing = str(UUID(int=1))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub: UserServiceAsyncStub = users_pb2_grpc.UserServiceStub(channel)
            metadata = (("authorization", f"Bearer {await tokens.admin()}"),)
            with pytest.raises(grpc.aio.AioRpcError) as read:
                await stub.GetUser(
                    users_pb2.GetUserRequest(id=missing), timeout=5, metadata=metadata
                )
            with pytest.raises(grpc.aio.AioRpcError) as write:
                await stub.DeleteUser(
                    users_pb2.DeleteUserRequest(id=missing), timeout=5, metadata=metadata
                )
    finally:
        await running.stop(0)
    unavailable = (grpc.StatusCode.UNAVAILABLE, "cannot check the session; retry later")
    if mode == "degraded":  # the read passed the access check and asked PostgreSQL
        assert read.value.code() == grpc.StatusCode.NOT_FOUND
    else:
        assert (read.value.code(), read.value.details()) == unavailable
    assert (write.value.code(), write.value.details()) == unavailable
