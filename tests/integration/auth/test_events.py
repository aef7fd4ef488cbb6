"""The auth service's events: sign-up, login, refresh-token reuse and logout, in ``auth.outbox``."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from portico.auth.v1 import auth_pb2
from tests.integration.auth.test_tokens import login, sign_up
from tests.support.auth import rows

if TYPE_CHECKING:
    from portico.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub


async def test_sign_up_login_reuse_and_logout_write_their_events(
    auth: AuthServiceAsyncStub, database_url: str, valkey: Any
) -> None:
    user_id = await sign_up(auth, "events@example.com")
    first = await login(auth, "events@example.com")
    refreshed = await auth.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=first.refresh_token), timeout=5
    )
    with pytest.raises(grpc.aio.AioRpcError):  # the spent token again: the session is revoked
        await auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=first.refresh_token), timeout=5
        )
    second = await login(auth, "events@example.com")
    await auth.Logout(auth_pb2.LogoutRequest(refresh_token=second.refresh_token), timeout=5)
    # Logging out of an already ended session changes nothing: no event.
    await auth.Logout(auth_pb2.LogoutRequest(refresh_token=second.refresh_token), timeout=5)

    events = await rows(database_url, "SELECT * FROM auth.outbox ORDER BY seq")
    assert [(e["type"], e["subject"]) for e in events] == [
        ("credential.created", user_id),
        ("auth.logged_in", user_id),
        ("auth.session_revoked", user_id),
        ("auth.logged_in", user_id),
        ("auth.session_revoked", user_id),
    ]
    payloads = [json.loads(e["payload"]) for e in events]
    first_sid = first.refresh_token.partition(".")[0]
    second_sid = second.refresh_token.partition(".")[0]
    assert payloads[1:] == [
        {"session_id": first_sid},
        {"session_id": first_sid, "reason": "refresh_token_reuse"},
        {"session_id": second_sid},
        {"session_id": second_sid, "reason": "logout"},
    ]
    assert [e["actor"] for e in events[1:]] == [user_id, None, user_id, user_id]
    text = json.dumps([dict(e) for e in events], default=str)
    for secret in (first.refresh_token, refreshed.refresh_token, second.access_token, "$argon2"):
        assert secret not in text, "no tokens or password hashes in events"

    # The server's own relay publishes them to the stream (which the users service shares).
    for _ in range(100):
        published = [
            fields
            for _, fields in await valkey.xrange("portico:events:v1")
            if fields[b"service"] == b"auth"
        ]
        if len(published) == len(events):
            break
        await asyncio.sleep(0.05)
    assert [fields[b"id"].decode() for fields in published] == [str(e["id"]) for e in events]
