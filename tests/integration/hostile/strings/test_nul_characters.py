"""U+0000 in a string field: a 400 (INVALID_ARGUMENT) naming the field, on REST and gRPC.

PostgreSQL's text cannot hold a NUL: it used to reach the database and come back as a 500
(gRPC INTERNAL), anonymously on ``POST /v1/auth/token`` (issue 14, item 2). The rule is declared
once per field in the protos (``portico.validate.v1.no_nul``, see tests/unit/proto for the check
that no string field misses it) and enforced by each service's validation interceptor, so a
gRPC caller meets it as a REST caller does.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest

from portico.auth.v1 import auth_pb2
from portico.users.v1 import users_pb2
from tests.integration.hostile.support import fields_of, refused, violated_fields
from tests.support.security import PASSWORD, People, authorization, metadata

if TYPE_CHECKING:
    from portico.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub

NUL = "nul\x00here"
SIGN_UP = {"email": "new@example.com", "display_name": "New", "password": PASSWORD}


@pytest.mark.parametrize("encoding", ["json", "form"])
@pytest.mark.parametrize("field", ["username", "password"])
async def test_login_with_a_nul_is_a_400_naming_the_field(
    api: httpx.AsyncClient, encoding: str, field: str
) -> None:
    values = {"grant_type": "password", "username": "a@example.com", "password": "guess"}
    values[field] = NUL
    sent = {"json": values} if encoding == "json" else {"data": values}
    response = await api.post("/v1/auth/token", **sent)  # type: ignore[arg-type]
    assert fields_of(refused(response, 400)) == {field}


@pytest.mark.parametrize("field", ["display_name", "password"])
async def test_sign_up_with_a_nul_is_a_400_naming_the_field(
    api: httpx.AsyncClient, field: str
) -> None:
    key = {"idempotency_key": str(uuid.uuid4())}
    response = await api.post("/v1/auth/signup", json=SIGN_UP | key | {field: NUL})
    assert fields_of(refused(response, 400)) == {field}


async def test_refresh_and_logout_with_a_nul_are_400s(api: httpx.AsyncClient) -> None:
    for path in ("/v1/auth/refresh", "/v1/auth/logout"):
        response = await api.post(path, json={"refresh_token": NUL})
        assert fields_of(refused(response, 400)) == {"refresh_token"}, path


async def test_patch_and_list_with_a_nul_are_400s(api: httpx.AsyncClient, people: People) -> None:
    me = authorization(people.self.access_token)
    patched = await api.patch(
        f"/v1/users/{people.self.user_id}", json={"display_name": NUL}, headers=me
    )
    assert fields_of(refused(patched, 400)) == {"user.display_name"}
    admin = authorization(people.admin.access_token)
    listed = await api.get("/v1/users", params={"page_token": NUL}, headers=admin)
    assert fields_of(refused(listed, 400)) == {"page_token"}
    events = await api.get("/v1/audit/events", params={"type": NUL}, headers=admin)
    assert fields_of(refused(events, 400)) == {"type"}
    # the account is unchanged and still served
    assert (await api.get("/v1/users/me", headers=me)).json()["display_name"] != NUL


async def test_grpc_login_with_a_nul_is_invalid_argument(auth: AuthServiceAsyncStub) -> None:
    request = auth_pb2.IssueTokenRequest(grant_type="password", username=NUL, password="guess")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.IssueToken(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == {"username"}


async def test_grpc_update_with_a_nul_is_invalid_argument(
    users: UserServiceAsyncStub, people: People
) -> None:
    request = users_pb2.UpdateUserRequest(
        id=people.self.user_id, user=users_pb2.UserUpdate(display_name=NUL)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.UpdateUser(request, metadata=metadata(people.self.access_token), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == {"user.display_name"}
