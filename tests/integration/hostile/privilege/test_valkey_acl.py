"""A compromised component reaches only its own keys: one Valkey ACL user per component.

Every component used to share one Valkey password with every command, so the internet-facing
gateway could write a session record (minting a live session for any token it forges), read the
users cache, or ``FLUSHALL`` everyone's sessions, limits and events (issue 14, item 9). Each
component now connects as its own user (``portico_devstack.valkey_acl``); the test Valkey runs
with the same users as ``make run`` and Kubernetes. Here each user tries what its component must
never do, on the real server.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import valkey.asyncio as valkey_asyncio
from valkey.exceptions import AuthenticationError, NoPermissionError, ResponseError

from portico_devstack.valkey_acl import (
    COMPONENTS,
    DEAD_LETTERS,
    EVENTS,
    HA_RULES,
    REPLICA,
    SENTINEL,
    user_url,
)
from tests.support.stores import component_valkey_url, valkey_client

SESSION = "portico:auth:v1:session:" + "ab" * 16
CACHED_USER = "portico:users:v1:00000000-0000-0000-0000-000000000001"
RATE_LIMIT = "portico:gateway:v1:rl:address:203.0.113.7"

Connect = Callable[[str], AbstractAsyncContextManager[Any]]


@pytest.fixture
async def admin(valkey_url: str) -> AsyncIterator[Any]:
    """The fixtures' own user, holding a live session, a cached user and an event."""
    client: Any = valkey_asyncio.from_url(valkey_url)  # type: ignore[no-untyped-call]
    await client.hset(SESSION, mapping={"uid": "u1", "roles": "user", "cur": "0" * 64})
    await client.hset(CACHED_USER, "d", "cached")
    await client.set(RATE_LIMIT, "1")
    await client.xadd(EVENTS, {"id": "e1", "type": "user.created"})
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def connect_as(valkey_url: str) -> Connect:
    def connect(component: str) -> AbstractAsyncContextManager[Any]:
        return valkey_client(component_valkey_url(valkey_url, component))

    return connect


async def refused(call: Awaitable[Any]) -> None:
    with pytest.raises(NoPermissionError):
        await call


async def test_the_gateway_cannot_write_or_delete_a_session(
    admin: Any, connect_as: Connect
) -> None:
    async with connect_as("gateway") as gateway:
        assert await gateway.exists(SESSION) == 1  # it may check one
        await refused(gateway.hset(SESSION, "roles", "admin"))
        await refused(gateway.hset("portico:auth:v1:session:" + "cd" * 16, "uid", "forged"))
        await refused(gateway.delete(SESSION))
        await refused(gateway.hget(SESSION, "cur"))
        await refused(gateway.publish("portico:auth:v1:sessions-ended", "ab" * 16))
    assert await admin.hget(SESSION, "roles") == b"user"


async def test_the_gateway_cannot_read_the_cache_or_touch_the_event_stream(
    admin: Any, connect_as: Connect
) -> None:
    async with connect_as("gateway") as gateway:
        assert await gateway.get(RATE_LIMIT) == b"1"  # its own keys
        await refused(gateway.hget(CACHED_USER, "d"))
        await refused(gateway.xadd(EVENTS, {"id": "forged"}))
        await refused(gateway.xrange(EVENTS))


@pytest.mark.parametrize("component", COMPONENTS)
async def test_no_component_may_flush_scan_or_reconfigure(
    admin: Any, connect_as: Connect, component: str
) -> None:
    async with connect_as(component) as client:
        await refused(client.flushall())
        await refused(client.flushdb())
        await refused(client.keys("*"))
        await refused(client.scan())
        await refused(client.config_set("maxmemory", "1"))
        await refused(client.execute_command("ACL", "SETUSER", component, "+@all", "~*"))
        await refused(client.eval("return redis.call('DEL', KEYS[1])", 1, SESSION))
    assert await admin.exists(SESSION, CACHED_USER, RATE_LIMIT) == 3


async def test_the_users_service_appends_events_but_cannot_read_or_trim_them(
    admin: Any, connect_as: Connect
) -> None:
    async with connect_as("users") as users:
        await users.xadd(EVENTS, {"id": "e2", "type": "user.updated"})  # its outbox relay
        await refused(users.xrange(EVENTS))
        await refused(users.xtrim(EVENTS, maxlen=0))
        await refused(users.delete(EVENTS))
        await refused(users.hset(SESSION, "roles", "admin"))
        await refused(users.set(RATE_LIMIT, "0"))
    assert await admin.xlen(EVENTS) == 2


async def test_the_audit_service_consumes_but_cannot_forge_events(
    admin: Any, connect_as: Connect
) -> None:
    async with connect_as("audit") as audit:
        await audit.xgroup_create(EVENTS, "audit", id="0")
        read = await audit.xreadgroup("audit", "a1", {EVENTS: ">"}, count=10)
        assert len(read[0][1]) == 1
        await audit.xadd(DEAD_LETTERS, {"id": "e1"})  # a poison event, set aside
        await refused(audit.xadd(EVENTS, {"id": "forged", "type": "user.deleted"}))
        await refused(audit.delete(EVENTS))
        await refused(audit.hget(CACHED_USER, "d"))
    assert await admin.xlen(EVENTS) == 1


async def test_the_auth_service_cannot_touch_the_gateways_limits_or_the_cache(
    admin: Any, connect_as: Connect
) -> None:
    async with connect_as("auth") as auth:
        assert await auth.hget(SESSION, "uid") == b"u1"  # its own sessions
        await refused(auth.delete(RATE_LIMIT))
        await refused(auth.hset(CACHED_USER, "d", "poisoned"))
    assert await admin.get(RATE_LIMIT) == b"1"


async def test_without_a_user_only_ping_answers(admin: Any, valkey_url: str) -> None:
    scheme, _, rest = valkey_url.partition("://")
    plain = f"{scheme}://{rest.rpartition('@')[2]}"  # no user: Valkey's default user
    anonymous: Any = valkey_asyncio.from_url(plain)  # type: ignore[no-untyped-call]
    try:
        assert await anonymous.ping()
        await refused(anonymous.exists(SESSION))
        await refused(anonymous.hset(SESSION, "roles", "admin"))
    finally:
        await anonymous.aclose()
    wrong: Any = valkey_asyncio.from_url(  # type: ignore[no-untyped-call]
        component_valkey_url(valkey_url, "gateway").replace("gateway:", "gateway:x", 1)
    )
    try:
        with pytest.raises((AuthenticationError, ResponseError)):
            await wrong.ping()
    finally:
        await wrong.aclose()


@pytest.fixture
async def ha_user(admin: Any, valkey_url: str) -> AsyncIterator[Connect]:
    """The replication and Sentinel users (``HA_RULES``, as every node in staging and prod has
    them), created on the test Valkey for the test and removed after it."""
    passwords = {name: secrets.token_hex(16) for name in HA_RULES}
    for name, rules in HA_RULES.items():
        await admin.execute_command(
            "ACL", "SETUSER", name, "reset", "on", f">{passwords[name]}", *rules
        )

    def connect(name: str) -> AbstractAsyncContextManager[Any]:
        return valkey_client(user_url(valkey_url, name, passwords[name]))

    try:
        yield connect
    finally:
        await admin.execute_command("ACL", "DELUSER", *HA_RULES)


async def test_the_replication_and_sentinel_users_reach_no_data(ha_user: Connect) -> None:
    """A stolen replica or sentinel password (staging, prod) reads and writes no key, hears no
    session ending, and cannot reconfigure, flush or script the node. (What Sentinel needs to
    fail over, ``SLAVEOF`` and ``CLIENT KILL``, it keeps: docs/valkey-ha.md.)"""
    for name in HA_RULES:
        async with ha_user(name) as client:
            assert await client.ping() is True
            await refused(client.get(RATE_LIMIT))
            await refused(client.hget(SESSION, "cur"))
            await refused(client.hset(SESSION, "roles", "admin"))
            await refused(client.xrange(EVENTS))
            await refused(client.xadd(EVENTS, {"id": "forged"}))
            await refused(client.flushall())
            await refused(client.keys("*"))
            await refused(client.config_set("maxmemory", "1"))
            await refused(client.eval("return 1", 0))
            await refused(client.execute_command("ACL", "SETUSER", name, "+@all", "~*"))
            await refused(client.publish("portico:auth:v1:sessions-ended", "ab" * 16))
    async with ha_user(REPLICA) as replica:
        await refused(replica.info())
        await refused(replica.slaveof())
    async with ha_user(SENTINEL) as sentinel:
        assert "role" in await sentinel.info("replication")
        await refused(sentinel.publish("portico:auth:v1:sessions-ended", "ab" * 16))
        assert await sentinel.publish("__sentinel__:hello", "x") == 0
