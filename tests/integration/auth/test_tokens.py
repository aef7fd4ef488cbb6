"""Sign-up → token → refresh → reuse detection → logout, against real servers and backends."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import jwt
import pytest

from portico.auth.v1 import auth_pb2
from portico_auth.server import RunningServer

if TYPE_CHECKING:
    from portico.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub

PASSWORD = "correct horse battery"
PREFIX = "portico:auth:v1:"


async def sign_up(auth: AuthServiceAsyncStub, email: str, password: str = PASSWORD) -> str:
    response = await auth.SignUp(
        auth_pb2.SignUpRequest(
            email=email,
            display_name="Ada",
            password=password,
            idempotency_key=str(uuid.uuid4()),
        ),
        timeout=10,
    )
    return response.user_id


async def login(
    auth: AuthServiceAsyncStub, email: str, password: str = PASSWORD
) -> auth_pb2.IssueTokenResponse:
    return await auth.IssueToken(
        auth_pb2.IssueTokenRequest(grant_type="password", username=email, password=password),
        timeout=10,
    )


async def jwks_keys(auth: AuthServiceAsyncStub) -> dict[str, jwt.PyJWK]:
    response = await auth.GetJwks(auth_pb2.GetJwksRequest(), timeout=5)
    return {
        key.kid: jwt.PyJWK(
            {"kty": key.kty, "crv": key.crv, "x": key.x, "kid": key.kid, "use": key.use}
        )
        for key in response.keys
    }


async def decode(auth: AuthServiceAsyncStub, token: str) -> dict[str, Any]:
    """Verify ``token`` with PyJWT against the published JWKS, as a gateway would."""
    kid = jwt.get_unverified_header(token)["kid"]
    key = (await jwks_keys(auth))[kid]
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["EdDSA"], audience="portico-api", issuer="portico"
    )
    return claims


async def test_the_whole_token_life_cycle(auth: AuthServiceAsyncStub, valkey: Any) -> None:
    user_id = await sign_up(auth, "ada@example.com")

    first = await login(auth, "ADA@example.com")  # emails are case-insensitive
    claims = await decode(auth, first.access_token)
    assert claims["sub"] == user_id
    session = f"{PREFIX}session:{claims['sid']}"
    assert await valkey.exists(session) == 1
    assert (first.token_type, first.expires_in) == ("Bearer", 900)

    second = await auth.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=first.refresh_token), timeout=5
    )
    assert second.refresh_token != first.refresh_token
    assert (await decode(auth, second.access_token))["sid"] == claims["sid"]

    with pytest.raises(grpc.aio.AioRpcError) as reused:  # the spent token again: theft
        await auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=first.refresh_token), timeout=5
        )
    assert reused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await valkey.exists(session) == 0  # the whole session is revoked
    with pytest.raises(grpc.aio.AioRpcError) as after:  # the latest token died with it
        await auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=second.refresh_token), timeout=5
        )
    assert after.value.code() == grpc.StatusCode.UNAUTHENTICATED

    third = await login(auth, "ada@example.com")
    sid = (await decode(auth, third.access_token))["sid"]
    await auth.Logout(
        auth_pb2.LogoutRequest(),
        metadata=(("authorization", f"Bearer {third.access_token}"),),
        timeout=5,
    )
    assert await valkey.exists(f"{PREFIX}session:{sid}") == 0


async def test_logout_with_a_refresh_token_is_idempotent(
    auth: AuthServiceAsyncStub, valkey: Any
) -> None:
    await sign_up(auth, "lo@example.com")
    grant = await login(auth, "lo@example.com")
    sid = (await decode(auth, grant.access_token))["sid"]

    for _ in range(2):
        await auth.Logout(auth_pb2.LogoutRequest(refresh_token=grant.refresh_token), timeout=5)

    assert await valkey.exists(f"{PREFIX}session:{sid}") == 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=grant.refresh_token), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_made_up_refresh_token_for_a_known_session_does_not_revoke_it(
    auth: AuthServiceAsyncStub, valkey: Any
) -> None:
    await sign_up(auth, "sid@example.com")
    grant = await login(auth, "sid@example.com")
    sid = (await decode(auth, grant.access_token))["sid"]  # sids are not secret
    forged = f"{sid}.{'A' * 43}"

    for call in (
        auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=forged), timeout=5),
        auth.Logout(auth_pb2.LogoutRequest(refresh_token=forged), timeout=5),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    assert await valkey.exists(f"{PREFIX}session:{sid}") == 1


async def test_logout_without_any_token_is_unauthenticated(auth: AuthServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Logout(
            auth_pb2.LogoutRequest(), metadata=(("authorization", "Bearer nope"),), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_access_tokens_carry_every_claim_and_the_kid(
    auth: AuthServiceAsyncStub, auth_server: RunningServer
) -> None:
    user_id = await sign_up(auth, "claims@example.com")
    before = int(time.time())
    grant = await login(auth, "claims@example.com")

    header = jwt.get_unverified_header(grant.access_token)
    claims = await decode(auth, grant.access_token)

    assert header["alg"] == "EdDSA"
    assert header["kid"] in await jwks_keys(auth)
    assert set(claims) == {"sub", "sid", "roles", "iss", "aud", "exp", "iat", "jti"}
    assert claims["sub"] == user_id
    assert claims["roles"] == ["user"]
    assert (claims["iss"], claims["aud"]) == ("portico", "portico-api")
    assert before <= claims["iat"] <= int(time.time())
    assert 0 < claims["exp"] - claims["iat"] <= 900
    assert len(claims["jti"]) == 32
    assert len(grant.refresh_token) >= 32 + 1 + 43  # sid . 256 random bits


async def test_the_jwks_publishes_okp_ed25519_keys(auth: AuthServiceAsyncStub) -> None:
    response = await auth.GetJwks(auth_pb2.GetJwksRequest(), timeout=5)

    assert len(response.keys) == 1
    key = response.keys[0]
    assert (key.kty, key.crv, key.use, key.alg) == ("OKP", "Ed25519", "sig", "EdDSA")
    assert len(key.x) == 43
    assert len(key.kid) == 43


@pytest.mark.parametrize("settings_overrides", [{"admin_emails": ["Boss@Example.com"]}])
async def test_admin_emails_get_the_admin_role(auth: AuthServiceAsyncStub) -> None:
    await sign_up(auth, "boss@example.com")
    await sign_up(auth, "staff@example.com")

    boss = await decode(auth, (await login(auth, "boss@example.com")).access_token)
    staff = await decode(auth, (await login(auth, "staff@example.com")).access_token)

    assert boss["roles"] == ["user", "admin"]
    assert staff["roles"] == ["user"]


@pytest.mark.parametrize("settings_overrides", [{"access_token_ttl_s": 60}])
async def test_the_access_token_lifetime_follows_the_setting(auth: AuthServiceAsyncStub) -> None:
    await sign_up(auth, "short@example.com")
    grant = await login(auth, "short@example.com")
    claims = await decode(auth, grant.access_token)

    assert grant.expires_in == 60
    assert claims["exp"] - claims["iat"] == 60
