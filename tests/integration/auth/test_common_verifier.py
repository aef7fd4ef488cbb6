"""portico_common's verifier against the real auth service: JWKS over gRPC, sessions in Valkey."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from portico.auth.v1 import auth_pb2
from portico_common.access import SessionCheckUnavailable, authenticate
from portico_common.tokens import (
    InvalidToken,
    JwksCache,
    TokenVerifier,
    ValkeySessions,
    jwks_from_auth_service,
)
from tests.integration.auth.test_tokens import login, sign_up

ISS, AUD = "portico", "portico-api"

if TYPE_CHECKING:
    from portico.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub


async def test_tokens_of_the_auth_service_verify_until_logout(
    auth: AuthServiceAsyncStub, channel: grpc.aio.Channel, valkey: Any
) -> None:
    email = f"v-{uuid.uuid4().hex[:8]}@example.com"
    user_id = await sign_up(auth, email)
    tokens = await login(auth, email)
    verifier = TokenVerifier(
        JwksCache(jwks_from_auth_service(channel)),
        ValkeySessions(valkey),
        issuer="portico",
        audience="portico-api",
    )
    principal = await verifier.verify(tokens.access_token)
    assert principal.user_id == user_id
    assert principal.roles == frozenset({"user"})

    await auth.Logout(auth_pb2.LogoutRequest(refresh_token=tokens.refresh_token), timeout=5)
    with pytest.raises(InvalidToken, match="session ended"):
        await verifier.verify(tokens.access_token)


async def test_a_token_for_another_audience_is_refused(
    auth: AuthServiceAsyncStub, channel: grpc.aio.Channel, valkey: Any
) -> None:
    email = f"a-{uuid.uuid4().hex[:8]}@example.com"
    await sign_up(auth, email)
    tokens = await login(auth, email)
    verifier = TokenVerifier(
        JwksCache(jwks_from_auth_service(channel)),
        ValkeySessions(valkey),
        issuer="portico",
        audience="another-api",
    )
    with pytest.raises(InvalidToken, match="another audience"):
        await verifier.verify(tokens.access_token)


async def _listening(sessions: ValkeySessions) -> None:
    sessions.start()
    for _ in range(100):
        if sessions.listening:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the sessions-ended listener did not subscribe within 2 s")


async def _refused_within(verifier: TokenVerifier, token: str, seconds: float) -> float:
    """How long until ``token`` is refused with "session ended" (fails after ``seconds``)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            await verifier.verify(token)
        except InvalidToken as exc:
            if exc.reason != "session ended":
                raise
            return time.monotonic() - started
        await asyncio.sleep(0.005)
    raise AssertionError(f"still accepted after {seconds} s")


@pytest.mark.parametrize("how", ["logout", "refresh-token reuse"])
async def test_a_remembered_session_ends_as_soon_as_the_auth_service_ends_it(
    auth: AuthServiceAsyncStub, channel: grpc.aio.Channel, valkey: Any, how: str
) -> None:
    """With answers remembered for a minute, a revocation still lands at once: the auth service
    announces it on the sessions-ended channel in the same script as the DEL."""
    email = f"c-{uuid.uuid4().hex[:8]}@example.com"
    await sign_up(auth, email)
    tokens = await login(auth, email)
    sessions = ValkeySessions(valkey, cache_s=60.0)
    await _listening(sessions)
    try:
        verifier = TokenVerifier(
            JwksCache(jwks_from_auth_service(channel)), sessions, issuer=ISS, audience=AUD
        )
        await verifier.verify(tokens.access_token)  # EXISTS said alive: remembered for 60 s
        if how == "logout":
            await auth.Logout(auth_pb2.LogoutRequest(refresh_token=tokens.refresh_token), timeout=5)
        else:  # presenting a spent refresh token revokes the whole session
            request = auth_pb2.RefreshTokenRequest(refresh_token=tokens.refresh_token)
            await auth.RefreshToken(request, timeout=5)
            with pytest.raises(grpc.aio.AioRpcError):
                await auth.RefreshToken(request, timeout=5)
        assert await _refused_within(verifier, tokens.access_token, 1.0) < 0.5
    finally:
        await sessions.aclose()


async def test_a_remembered_answer_outlives_a_silent_delete_by_at_most_cache_s(
    auth: AuthServiceAsyncStub, channel: grpc.aio.Channel, valkey: Any
) -> None:
    """A session key deleted by hand (no message) is noticed once the memory expires."""
    email = f"s-{uuid.uuid4().hex[:8]}@example.com"
    await sign_up(auth, email)
    tokens = await login(auth, email)
    sessions = ValkeySessions(valkey, cache_s=0.5)
    await _listening(sessions)
    try:
        verifier = TokenVerifier(
            JwksCache(jwks_from_auth_service(channel)), sessions, issuer=ISS, audience=AUD
        )
        principal = await verifier.verify(tokens.access_token)
        assert await valkey.delete(f"portico:auth:v1:session:{principal.session_id}") == 1
        await verifier.verify(tokens.access_token)  # remembered: no EXISTS was asked
        # Refused once the half second is over (not at once: the answer was remembered).
        assert 0.05 < await _refused_within(verifier, tokens.access_token, 3.0) < 1.5
    finally:
        await sessions.aclose()


async def test_nothing_is_remembered_while_the_subscription_is_down(
    auth: AuthServiceAsyncStub, channel: grpc.aio.Channel, valkey: Any
) -> None:
    """Messages sent while the listener is disconnected are lost, so losing the subscription
    forgets every remembered answer until it is back; then remembering resumes."""
    email = f"d-{uuid.uuid4().hex[:8]}@example.com"
    await sign_up(auth, email)
    tokens = await login(auth, email)
    sessions = ValkeySessions(valkey, cache_s=60.0)
    await _listening(sessions)
    try:
        verifier = TokenVerifier(
            JwksCache(jwks_from_auth_service(channel)), sessions, issuer=ISS, audience=AUD
        )
        principal = await verifier.verify(tokens.access_token)  # remembered
        assert await valkey.client_kill_filter(_type="pubsub") >= 1  # the listener's connection
        for _ in range(100):
            if not sessions.listening:
                break
            await asyncio.sleep(0.01)
        assert await valkey.delete(f"portico:auth:v1:session:{principal.session_id}") == 1
        with pytest.raises(InvalidToken, match="session ended"):  # asked Valkey again
            await verifier.verify(tokens.access_token)
        await _listening(sessions)  # it resubscribes by itself
    finally:
        await sessions.aclose()


async def test_an_unreachable_auth_service_makes_a_valid_token_retryable_not_invalid(
    auth: AuthServiceAsyncStub, valkey: Any
) -> None:
    """No key set fetched yet and the auth service unreachable: 503 / UNAVAILABLE, never 401."""
    email = f"k-{uuid.uuid4().hex[:8]}@example.com"
    await sign_up(auth, email)
    tokens = await login(auth, email)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as nowhere:
        verifier = TokenVerifier(
            JwksCache(jwks_from_auth_service(nowhere, timeout_s=0.5)),
            ValkeySessions(valkey),
            issuer=ISS,
            audience=AUD,
        )
        with pytest.raises(SessionCheckUnavailable, match="signing keys"):
            await authenticate(verifier, f"Bearer {tokens.access_token}")
