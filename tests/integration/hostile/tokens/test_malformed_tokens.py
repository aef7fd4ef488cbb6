"""Malformed access tokens are 401 / UNAUTHENTICATED, however they are malformed.

A JWT whose header was nested ~3,000 levels deep made the JSON parser raise RecursionError,
which the verifier took for a session-store failure: 503 "cannot check the session; retry
later" (gRPC UNAVAILABLE) and a false warning in the log (issue 14, item 3). Now a token longer
than any Portico issues is malformed before it is parsed, and a parser's RecursionError is a
malformed token too; only the session store's own errors are 503.
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest

from portico.auth.v1 import auth_pb2
from portico.users.v1 import users_pb2
from portico_common.tokens import MAX_TOKEN_CHARS
from tests.integration.hostile.support import refused
from tests.support.security import authorization, metadata

if TYPE_CHECKING:
    from portico.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def nested(depth: int) -> str:
    """A JWT-shaped token whose header is a JSON object nested ``depth`` levels deep."""
    header = b'{"alg":"EdDSA","kid":"k","x":' + b"[" * depth + b"]" * depth + b"}"
    return f"{b64url(header)}.{b64url(b'{}')}.{b64url(b'signature')}"


#: The reported token, one just over the length bound, and one within it but still too deep
#: for the parser at any realistic stack depth.
MALFORMED = {
    "nested-3000": nested(3000),
    "too-long": nested(1) + "A" * MAX_TOKEN_CHARS,
    "nested-within-bound": nested(1400),
}


@pytest.fixture
def no_false_outage(caplog: pytest.LogCaptureFixture) -> object:
    caplog.set_level(logging.WARNING)
    yield
    lines = [r.getMessage() for r in caplog.records]
    assert not [line for line in lines if "session check failed" in line], lines


@pytest.mark.usefixtures("no_false_outage")
@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_rest_protected_route_answers_401(api: httpx.AsyncClient, name: str) -> None:
    assert len(MALFORMED["nested-within-bound"]) <= MAX_TOKEN_CHARS
    someone = "/v1/users/00000000-0000-4000-8000-000000000000"
    for verb, path in (("GET", "/v1/users/me"), ("PATCH", someone)):  # a read and a write
        response = await api.request(
            verb, path, json={"display_name": "x"}, headers=authorization(MALFORMED[name])
        )
        body = refused(response, 401)
        assert body["type"].endswith("/invalid-token"), body
        assert response.headers["www-authenticate"].startswith('Bearer realm="portico"')


@pytest.mark.usefixtures("no_false_outage")
@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_rest_logout_with_a_malformed_bearer_answers_401(
    api: httpx.AsyncClient, name: str
) -> None:
    response = await api.post("/v1/auth/logout", json={}, headers=authorization(MALFORMED[name]))
    refused(response, 401)


@pytest.mark.usefixtures("no_false_outage")
@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_grpc_answers_unauthenticated(
    users: UserServiceAsyncStub, auth: AuthServiceAsyncStub, name: str
) -> None:
    bad = metadata(MALFORMED[name])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.GetCurrentUser(users_pb2.GetCurrentUserRequest(), metadata=bad, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, caught.value
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Logout(auth_pb2.LogoutRequest(), metadata=bad, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, caught.value


async def test_grpc_metadata_under_the_bound_always_reaches_the_service(
    users: UserServiceAsyncStub,
) -> None:
    """A 12 KiB token is UNAUTHENTICATED every time, and 17 KiB of metadata always refused.

    With gRPC's default limits a call whose metadata is between the soft (8 KiB) and the hard
    limit is refused at random (RESOURCE_EXHAUSTED); the services set both to one bound
    (``portico_common.runtime.MAX_METADATA_BYTES``), so the answer never depends on chance.
    """
    under = metadata(nested(1) + "A" * (12 * 1024))
    over = metadata(nested(1) + "A" * (17 * 1024))
    request = users_pb2.GetCurrentUserRequest()
    for _ in range(20):  # at random, 20 in a row would all pass only by a fluke
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await users.GetCurrentUser(request, metadata=under, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, caught.value
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await users.GetCurrentUser(request, metadata=over, timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value
