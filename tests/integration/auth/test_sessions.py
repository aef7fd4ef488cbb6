"""The session scripts against a real Valkey, with a clock the test moves: the absolute end,
sessions written before it existed, and the per-user index."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from portico_auth.sessions import SPENT_KEPT, Rotation, Sessions, token_hash
from portico_common.tokens import sessions_ended_channel

PREFIX = "portico:auth:v1:"
DAY_S = 24 * 3600
T0 = 1_800_000_000.0  # a fixed "now", seconds since the epoch


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sessions(valkey: Any, clock: Clock) -> Sessions:
    return Sessions(
        valkey, key_prefix=PREFIX, ttl_s=14 * DAY_S, absolute_ttl_s=30 * DAY_S, clock=clock
    )


async def test_a_refresh_at_the_absolute_end_deletes_the_session_and_announces_it(
    sessions: Sessions, clock: Clock, valkey: Any
) -> None:
    sid, token = await sessions.create(user_id="u1", roles=["user"])
    assert await valkey.pttl(sessions.key(sid)) <= 14 * DAY_S * 1000
    clock.now += 29 * DAY_S  # refreshed near the end: the TTL is capped by what is left
    rotated = await sessions.rotate(token, roles=["user"])
    assert rotated.outcome is Rotation.ROTATED
    assert await valkey.pttl(sessions.key(sid)) <= DAY_S * 1000
    async with valkey.pubsub() as pubsub:
        await pubsub.subscribe(sessions_ended_channel(PREFIX))
        clock.now += DAY_S  # the key would still exist on a server whose clock lags ours
        ended = await sessions.rotate(rotated.refresh_token, roles=["user"])
        assert (ended.outcome, ended.user_id) == (Rotation.ENDED, "u1")
        assert not await valkey.exists(sessions.key(sid))
        message = None
        async with asyncio.timeout(10):
            while message is None:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        assert message["data"] == sid.encode()


async def test_a_session_written_before_the_bounded_record_is_converted(
    sessions: Sessions, clock: Clock, valkey: Any
) -> None:
    sid = "0" * 32
    current, spent = f"{sid}.{'c' * 43}", [f"{sid}.{i:043d}" for i in range(40)]
    old = {f"old:{token_hash(t)}": "1" for t in spent}
    await valkey.hset(
        sessions.key(sid),
        mapping={"uid": "u1", "roles": "user", "cur": token_hash(current), **old},
    )
    rotated = await sessions.rotate(current, roles=["user"])
    assert rotated.outcome is Rotation.ROTATED
    fields = {k.decode() for k in await valkey.hkeys(sessions.key(sid))}
    assert fields == {"uid", "roles", "cur", "spent", "refreshed", "ends"}
    assert int(await valkey.hget(sessions.key(sid), "ends")) == int((T0 + 30 * DAY_S) * 1000)
    # Before conversion an old:* token was reuse; now only the last SPENT_KEPT count.
    for _ in range(SPENT_KEPT + 2):
        rotated = await sessions.rotate(rotated.refresh_token, roles=["user"])
    assert len((await valkey.hget(sessions.key(sid), "spent")).split()) == SPENT_KEPT
    assert (await sessions.rotate(spent[0], roles=["user"])).outcome is Rotation.UNKNOWN


async def test_a_legacy_spent_token_is_still_reuse_until_the_conversion(
    sessions: Sessions, valkey: Any
) -> None:
    sid = "1" * 32
    current, spent = f"{sid}.{'c' * 43}", f"{sid}.{'s' * 43}"
    await valkey.hset(
        sessions.key(sid),
        mapping={
            "uid": "u1",
            "roles": "user",
            "cur": token_hash(current),
            f"old:{token_hash(spent)}": "1",
        },
    )
    assert (await sessions.rotate(spent, roles=["user"])).outcome is Rotation.REUSED
    assert not await valkey.exists(sessions.key(sid))


async def test_the_user_index_lists_ends_and_forgets(sessions: Sessions, valkey: Any) -> None:
    first, _ = await sessions.create(user_id="u1", roles=["user"])
    second, _ = await sessions.create(user_id="u1", roles=["user"])
    other, _ = await sessions.create(user_id="u2", roles=["user"])
    await sessions.end(first)  # a logout: the index still names it until it is read
    listed = await sessions.of_user("u1")
    assert [s.session_id for s in listed] == [second]
    assert listed[0].created_ms == listed[0].refreshed_ms == int(T0 * 1000)
    assert listed[0].ends_ms == int((T0 + 30 * DAY_S) * 1000)
    assert set(await valkey.smembers(sessions.index_key("u1"))) == {second.encode()}
    assert await sessions.end_all("u1") == [second]
    assert await sessions.end_all("u1") == []  # idempotent
    assert not await valkey.exists(sessions.index_key("u1"))
    assert await sessions.alive(other)
