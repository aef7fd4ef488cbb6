"""The ``user.deleted`` consumer of a real auth server: what a dead replica left pending is taken
over, other events and malformed ones are acknowledged untouched."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from portico_auth.config import UserDeletionSettings
from portico_auth.sessions import Sessions
from portico_users.server import RunningServer as UsersServer
from tests.support.auth import running_auth

STREAM = "portico:events:v1"
GROUP = "auth-sessions"


def entry(type_: str, subject: str) -> dict[str, str]:
    """A stream entry as the outbox relay writes it (only what the consumer reads matters)."""
    return {
        "id": str(uuid.uuid4()),
        "type": type_,
        "subject": subject,
        "actor": "",
        "payload": "{}",
    }


async def pending(valkey: Any) -> int:
    return int((await valkey.xpending(STREAM, GROUP))["pending"])


async def test_an_entry_left_pending_by_a_dead_replica_is_taken_over(
    valkey: Any, valkey_url: str, database_url: str, users_server: UsersServer, key_file: Path
) -> None:
    user = str(uuid.uuid4())
    sessions = Sessions(valkey, key_prefix="portico:auth:v1:", ttl_s=3600, absolute_ttl_s=7200)
    sid, _ = await sessions.create(user_id=user, roles=["user"])
    await valkey.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    await valkey.xadd(STREAM, entry("user.updated", user))
    await valkey.xadd(STREAM, entry("user.deleted", "not-a-uuid"))
    await valkey.xadd(STREAM, entry("user.deleted", user))
    # A replica reads all three and dies before acknowledging any.
    await valkey.xreadgroup(GROUP, "auth-dead", {STREAM: ">"}, count=10)
    assert await pending(valkey) == 3

    async with running_auth(
        database_url=database_url,
        valkey_url=valkey_url,
        users_port=users_server.port,
        key_file=key_file,
        user_deletions=UserDeletionSettings(name="auth-live", claim_idle_ms=200),
    ):
        deadline = time.monotonic() + 30
        while await valkey.exists(sessions.key(sid)) or await pending(valkey):
            assert time.monotonic() < deadline, "the pending entries were never taken over"
            await asyncio.sleep(0.1)
    assert not await valkey.exists(sessions.index_key(user))
