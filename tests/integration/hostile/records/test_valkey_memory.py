"""One address cannot fill Valkey and evict sessions: state and cache live on separate instances.

Valkey had no ``maxmemory``: whatever one client made Valkey store (records, limits, cache
fills) grew until the host ran out of memory, and a policy that evicts would have thrown out
sessions, rate limits and events with the cache (issue 14, item 4). The state instance is now
bounded with ``noeviction`` (a full one refuses writes with an OOM error, and every session,
limit and event already stored stays), the users cache has an instance of its own, bounded
with ``allkeys-lru``. Both are started here with the launcher's own settings
(``portico_devstack.backends``), only smaller, and filled through the components' own users.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import valkey
import valkey.asyncio as valkey_asyncio
from pydantic import SecretStr
from valkey.exceptions import OutOfMemoryError

from portico.users.v1 import users_pb2, users_pb2_grpc
from portico_devstack import valkey_acl
from portico_devstack.backends import CACHE_MEMORY, STATE_MEMORY, EmbeddedValkey
from portico_users.server import start
from tests.support.stores import VALKEY_PASSWORDS
from tests.support.users import users_settings

if TYPE_CHECKING:
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub

SESSION = "portico:auth:v1:session:" + "ab" * 16
SMALL = "4mb"  # a few thousand writes fill it
PAYLOAD = "x" * 4096


def started(path: Path, memory: dict[str, str]) -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey(path, passwords=VALKEY_PASSWORDS, memory=memory | {"maxmemory": SMALL})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    yield from started(tmp_path / "state", STATE_MEMORY)


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    yield from started(tmp_path / "cache", CACHE_MEMORY)


def client(server: EmbeddedValkey, user: str) -> Any:
    return valkey.Valkey.from_url(valkey_acl.user_url(server.url, user, VALKEY_PASSWORDS[user]))


def test_the_launchers_instances_are_bounded_with_the_right_policies() -> None:
    assert STATE_MEMORY["maxmemory-policy"] == "noeviction"
    assert CACHE_MEMORY["maxmemory-policy"] == "allkeys-lru"
    assert all(int(m["maxmemory"].removesuffix("mb")) > 0 for m in (STATE_MEMORY, CACHE_MEMORY))


def test_a_full_state_instance_refuses_writes_and_keeps_every_session(
    state: EmbeddedValkey,
) -> None:
    auth, gateway = client(state, "auth"), client(state, "gateway")
    auth.hset(SESSION, mapping={"uid": "u1", "roles": "user", "cur": "0" * 64})
    auth.xadd(valkey_acl.EVENTS, {"id": "e1", "type": "user.created"})
    refused = None
    for n in range(10_000):  # one flooding client: rate-limit and idempotency-like keys
        try:
            gateway.set(f"portico:gateway:v1:rl:address:203.0.113.{n}", PAYLOAD)
        except OutOfMemoryError as exc:  # Valkey's -OOM reply
            refused = exc
            break
    assert refused is not None, "the state instance never filled up"
    assert "maxmemory" in str(refused)
    info = client(state, "admin").info("stats")
    assert info["evicted_keys"] == 0
    assert gateway.exists(SESSION) == 1
    assert auth.hget(SESSION, "uid") == b"u1"
    assert client(state, "admin").xlen(valkey_acl.EVENTS) == 1


def test_a_full_cache_instance_evicts_old_entries_and_keeps_taking_writes(
    cache: EmbeddedValkey,
) -> None:
    users = client(cache, "users")
    for n in range(5_000):  # about 20 MB into a 4 MB cache: never an error
        users.hset(f"portico:users:v1:{n:08d}", "d", PAYLOAD)
    admin = client(cache, "admin")
    assert admin.info("stats")["evicted_keys"] > 0
    assert admin.dbsize() < 5_000
    assert users.hget("portico:users:v1:00004999", "d") == PAYLOAD.encode()
    memory = admin.info("memory")
    assert memory["used_memory"] <= memory["maxmemory"] * 1.1


async def test_the_users_service_fills_its_cache_on_the_cache_instance_only(
    database_url: str, valkey_url: str, tokens: Any, cache: EmbeddedValkey
) -> None:
    """Cache fills go to ``USERS_VALKEY__CACHE_URL``; the state instance gets none of them."""
    settings = users_settings(database_url=database_url, valkey_url=valkey_url)
    settings.valkey.cache_url = SecretStr(cache.user_url("users"))
    running = await start(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub: UserServiceAsyncStub = users_pb2_grpc.UserServiceStub(channel)
            metadata = (("authorization", f"Bearer {await tokens.admin()}"),)
            created = await stub.CreateUser(
                users_pb2.CreateUserRequest(email="cached@example.com", display_name="Cached"),
                timeout=10,
                metadata=metadata,
            )
            for _ in range(2):
                await stub.GetUser(
                    users_pb2.GetUserRequest(id=created.user.id), timeout=10, metadata=metadata
                )
    finally:
        await running.stop(0)
    key = f"portico:users:v1:user:{created.user.id}"
    assert client(cache, "admin").exists(key) == 1
    state: Any = valkey_asyncio.from_url(valkey_url)  # type: ignore[no-untyped-call]
    try:
        assert [k async for k in state.scan_iter(match="portico:users:v1:*")] == []
    finally:
        await state.aclose()
