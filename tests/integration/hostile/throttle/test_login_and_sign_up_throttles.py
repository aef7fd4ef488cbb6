"""Guessing passwords and minting accounts: throttled, with ``Retry-After``, without letting an
attacker lock the owner out (issue 14, item 7).

* The login throttle's 429 had no ``Retry-After`` (the README promised one): the gateway now
  sends the service's ``google.rpc.RetryInfo`` as ``Retry-After``.
* The per-account throttle let anyone lock any account (admins too) without its password: an
  attempt now counts per account *and client address*, under a much higher account-wide
  ceiling, so the guesser is throttled and the owner, from another address, is not.
* Sign-up was not throttled at all: now per client address.

The client address is the last ``x-forwarded-for`` entry, which the gateway appends; the gRPC
cases send it as the gateway would, with its forwarder key (without it the address is the peer:
``hostile/forwarding/``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest

from portico.auth.v1 import auth_pb2
from tests.integration.hostile.support import THROTTLE_LIMITS, refused
from tests.support.auth import as_the_gateway
from tests.support.security import ADMIN_EMAIL, PASSWORD, sign_up

if TYPE_CHECKING:
    from portico.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub

ATTACKER, OWNER = "203.0.113.66", "198.51.100.10"
LIMITS = THROTTLE_LIMITS


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"admin_emails": [ADMIN_EMAIL], "throttle": LIMITS}


def login(auth: AuthServiceAsyncStub, address: str, password: str) -> Any:
    request = auth_pb2.IssueTokenRequest(
        grant_type="password", username=ADMIN_EMAIL, password=password
    )
    metadata = as_the_gateway(f"10.0.0.1, {address}")  # the gateway's entry is last
    return auth.IssueToken(request, metadata=metadata, timeout=10)


async def code_of(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_rest_login_429_carries_retry_after(api: httpx.AsyncClient) -> None:
    form = {"grant_type": "password", "username": "victim@example.com", "password": "guess"}
    for _ in range(LIMITS.account_client_limit):
        assert (await api.post("/v1/auth/token", data=form)).status_code == 401
    throttled = await api.post("/v1/auth/token", data=form)
    refused(throttled, 429)
    retry_after = int(throttled.headers["retry-after"])
    assert 1 <= retry_after <= LIMITS.window_s


async def test_an_attacker_cannot_lock_the_admin_out(auth: AuthServiceAsyncStub) -> None:
    await sign_up(auth, ADMIN_EMAIL)
    for _ in range(LIMITS.account_client_limit):
        assert await code_of(login(auth, ATTACKER, "wrong guess")) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    # the attacker is throttled, even with the right password ...
    assert await code_of(login(auth, ATTACKER, PASSWORD)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    # ... and the owner, from elsewhere, is not
    assert (await login(auth, OWNER, PASSWORD)).access_token


async def test_the_account_wide_ceiling_still_holds(auth: AuthServiceAsyncStub) -> None:
    """Many addresses together meet the account's ceiling: a distributed guesser is bounded."""
    codes = [
        await code_of(login(auth, f"192.0.2.{n}", "wrong guess"))
        for n in range(LIMITS.account_limit + 1)
    ]
    assert codes[:-1] == [grpc.StatusCode.UNAUTHENTICATED] * LIMITS.account_limit
    assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_sign_up_is_throttled_per_client_address(
    api: httpx.AsyncClient, auth: AuthServiceAsyncStub
) -> None:
    for n in range(LIMITS.signup_address_limit):
        body = {"email": f"bulk{n}@example.com", "display_name": "Bulk", "password": PASSWORD}
        assert (await api.post("/v1/auth/signup", json=body)).status_code == 201
    body = {"email": "one-more@example.com", "display_name": "Bulk", "password": PASSWORD}
    throttled = await api.post("/v1/auth/signup", json=body)
    refused(throttled, 429)
    assert int(throttled.headers["retry-after"]) >= 1
    # gRPC from the same address (the test process's loopback peer) meets the same counter ...
    request = auth_pb2.SignUpRequest(email="grpc@example.com", display_name="G", password=PASSWORD)
    assert await code_of(auth.SignUp(request, timeout=10)) == (grpc.StatusCode.RESOURCE_EXHAUSTED)
    # ... and another address is not affected
    other = as_the_gateway(OWNER)
    assert (await auth.SignUp(request, metadata=other, timeout=10)).user_id
