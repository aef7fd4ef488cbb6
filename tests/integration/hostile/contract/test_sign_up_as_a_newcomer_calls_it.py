"""Sign-up as a newcomer calls it: email, display name and password, nothing else (issue 14,
item 12). ``idempotency_key`` is optional (the ``Idempotency-Key`` header makes REST retries
safe); the answer is 201 Created with the new user's ``Location``, as every creating route's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import httpx
import pytest

from portico.auth.v1 import auth_pb2
from tests.support.security import PASSWORD, authorization, login

if TYPE_CHECKING:
    from portico.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub

NEWCOMER = {"email": "newcomer@example.com", "display_name": "New", "password": PASSWORD}


async def test_rest_sign_up_without_a_key_is_201_with_location(
    api: httpx.AsyncClient, auth: AuthServiceAsyncStub
) -> None:
    response = await api.post("/v1/auth/signup", json=NEWCOMER)
    assert response.status_code == 201, response.text
    user_id = response.json()["user_id"]
    assert response.headers["location"] == f"/v1/users/{user_id}"
    token = (await login(auth, NEWCOMER["email"])).access_token
    found = await api.get(response.headers["location"], headers=authorization(token))
    assert found.status_code == 200, found.text
    assert found.json()["email"] == NEWCOMER["email"]
    again = await api.post("/v1/auth/signup", json=NEWCOMER)  # no key: the email is taken
    assert again.status_code == 409, again.text


async def test_rest_retry_with_the_header_replays_the_201(api: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "newcomer-1"}
    first = await api.post("/v1/auth/signup", json=NEWCOMER, headers=headers)
    again = await api.post("/v1/auth/signup", json=NEWCOMER, headers=headers)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.headers["location"] == first.headers["location"]
    assert again.headers.get("idempotent-replayed") == "true"


async def test_grpc_sign_up_without_a_key(auth: AuthServiceAsyncStub) -> None:
    reply = await auth.SignUp(
        auth_pb2.SignUpRequest(email=NEWCOMER["email"], display_name="New", password=PASSWORD),
        timeout=10,
    )
    assert reply.user_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.SignUp(
            auth_pb2.SignUpRequest(email=NEWCOMER["email"], display_name="N", password=PASSWORD),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_openapi_documents_201_location_and_an_optional_key(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    operation = document["paths"]["/v1/auth/signup"]["post"]
    assert "Location" in operation["responses"]["201"]["headers"]
    assert "200" not in operation["responses"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    schema = body
    if "$ref" in body:
        schema = document["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert "idempotency_key" not in schema.get("required", []), schema
