"""portico_common's verifier against the real auth service: JWKS over gRPC, sessions in Valkey."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from portico.auth.v1 import auth_pb2
from portico_common.tokens import (
    InvalidToken,
    JwksCache,
    TokenVerifier,
    ValkeySessions,
    jwks_from_auth_service,
)
from tests.integration.auth.test_tokens import login, sign_up

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
