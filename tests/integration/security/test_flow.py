"""The whole session life cycle, on REST (through the gateway) and on gRPC (straight to services).

sign-up → token → "who am I" → refresh (a new pair) → the spent refresh token again (theft: the
whole session is revoked, so the new pair dies too) → a fresh login → logout (its access token is
refused at once). Real auth and users servers, real PostgreSQL and Valkey; nothing is mocked.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import jwt
import pytest

from portico.auth.v1 import auth_pb2
from portico.users.v1 import users_pb2
from tests.support.security import (
    PASSWORD,
    SESSION_PREFIX,
    authorization,
    code_of,
    metadata,
    problem,
)

if TYPE_CHECKING:
    from portico.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


def sid_of(access_token: str) -> str:
    """The session id of a token (read, not verified: the servers do the verifying)."""
    claims: dict[str, Any] = jwt.decode(access_token, options={"verify_signature": False})
    return str(claims["sid"])


async def token(api: httpx.AsyncClient, email: str) -> dict[str, Any]:
    """The password grant as RFC 6749 has it: a form."""
    response = await api.post(
        "/v1/auth/token",
        data={"grant_type": "password", "username": email, "password": PASSWORD},
    )
    assert response.status_code == 200, response.text
    grant: dict[str, Any] = response.json()
    assert grant["token_type"] == "Bearer"
    assert grant["access_token"]
    assert grant["refresh_token"]
    return grant


async def me(api: httpx.AsyncClient, access_token: str) -> httpx.Response:
    return await api.get("/v1/users/me", headers=authorization(access_token))


async def refresh(api: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await api.post("/v1/auth/refresh", json={"refresh_token": refresh_token})


async def test_rest_sign_up_refresh_reuse_and_logout(api: httpx.AsyncClient, valkey: Any) -> None:
    signed_up = await api.post(
        "/v1/auth/signup",
        json={
            "email": "ada@example.com",
            "display_name": "Ada",
            "password": PASSWORD,
            "idempotency_key": str(uuid.uuid4()),
        },
    )
    assert signed_up.status_code == 201, signed_up.text
    user_id = signed_up.json()["user_id"]

    first = await token(api, "ada@example.com")
    mine = await me(api, first["access_token"])
    assert mine.status_code == 200, mine.text
    assert (mine.json()["id"], mine.json()["email"]) == (user_id, "ada@example.com")

    rotated = await refresh(api, first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert (await me(api, second["access_token"])).status_code == 200
    session = SESSION_PREFIX + sid_of(second["access_token"])
    assert await valkey.exists(session) == 1

    # The spent refresh token again: theft. 401, and the whole session is revoked.
    problem(await refresh(api, first["refresh_token"]), 401)
    assert await valkey.exists(session) == 0
    problem(await me(api, second["access_token"]), 401)
    problem(await me(api, first["access_token"]), 401)
    problem(await refresh(api, second["refresh_token"]), 401)

    third = await token(api, "ada@example.com")
    assert (await me(api, third["access_token"])).status_code == 200
    logout = await api.post(
        "/v1/auth/logout",
        json={},  # no refresh token: the access token's session ends
        headers=authorization(third["access_token"]),
    )
    assert logout.status_code == 204, logout.text
    refused = problem(await me(api, third["access_token"]), 401)
    assert "session ended" in refused["detail"]
    problem(await refresh(api, third["refresh_token"]), 401)


async def test_grpc_sign_up_refresh_reuse_and_logout(
    auth: AuthServiceAsyncStub, users: UserServiceAsyncStub, valkey: Any
) -> None:
    signed_up = await auth.SignUp(
        auth_pb2.SignUpRequest(
            email="ada@example.com",
            display_name="Ada",
            password=PASSWORD,
            idempotency_key=str(uuid.uuid4()),
        ),
        timeout=10,
    )
    request = auth_pb2.IssueTokenRequest(
        grant_type="password", username="ada@example.com", password=PASSWORD
    )

    async def whoami(access_token: str) -> users_pb2.GetCurrentUserResponse:
        return await users.GetCurrentUser(
            users_pb2.GetCurrentUserRequest(), metadata=metadata(access_token), timeout=5
        )

    def rotate(refresh_token: str) -> Any:
        return auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=refresh_token), timeout=5
        )

    first = await auth.IssueToken(request, timeout=10)
    current = (await whoami(first.access_token)).user
    assert (current.id, current.email) == (signed_up.user_id, "ada@example.com")

    second = await rotate(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    assert (await whoami(second.access_token)).user.id == signed_up.user_id
    session = SESSION_PREFIX + sid_of(second.access_token)

    assert await code_of(rotate(first.refresh_token)) == UNAUTHENTICATED  # theft
    assert await valkey.exists(session) == 0
    assert await code_of(whoami(second.access_token)) == UNAUTHENTICATED
    assert await code_of(whoami(first.access_token)) == UNAUTHENTICATED
    assert await code_of(rotate(second.refresh_token)) == UNAUTHENTICATED

    third = await auth.IssueToken(request, timeout=10)
    assert (await whoami(third.access_token)).user.id == signed_up.user_id
    await auth.Logout(auth_pb2.LogoutRequest(), metadata=metadata(third.access_token), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await whoami(third.access_token)
    assert (refused.value.code(), refused.value.details()) == (UNAUTHENTICATED, "session ended")
    assert await code_of(rotate(third.refresh_token)) == UNAUTHENTICATED
