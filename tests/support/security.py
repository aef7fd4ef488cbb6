"""Helpers for the security tests: people who signed up for real, REST problems, bearer headers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import httpx
from pydantic import SecretStr

from portico.auth.v1 import auth_pb2
from portico_gateway.app import create_app
from portico_gateway.config import GatewaySettings
from tests.support.asgi import asgi_client
from tests.support.auth import FORWARDER_KEY
from tests.support.stores import component_valkey_url
from tests.support.timeouts import VALKEY_TIMEOUT_S

if TYPE_CHECKING:
    from portico.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub

PASSWORD = "correct horse battery staple"
DISPLAY_NAME = "Ada"  # of every person below
#: Listed in the auth server's ``admin_emails`` (see conftest): signing up with it makes an admin.
ADMIN_EMAIL = "admin@example.com"
SESSION_PREFIX = "portico:auth:v1:session:"
PROBLEM_JSON = "application/problem+json"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "request_id"}
#: Words that would betray internals in an error meant for clients.
LEAKS = ("Traceback", "Exception", "Error(", "jwt.", "PyJWT", "valkey", "redis", "127.0.0.1", "\n")


@dataclass(frozen=True)
class Person:
    """A user who signed up and logged in through the real auth service."""

    user_id: str
    email: str
    access_token: str
    refresh_token: str


@dataclass(frozen=True)
class People:
    """The callers of the matrices: two plain users and an admin (all real sign-ups)."""

    self: Person
    other: Person
    admin: Person


async def sign_up(auth: AuthServiceAsyncStub, email: str, name: str = DISPLAY_NAME) -> str:
    """Sign up over gRPC; the new user's id."""
    response = await auth.SignUp(
        auth_pb2.SignUpRequest(
            email=email, display_name=name, password=PASSWORD, idempotency_key=str(uuid.uuid4())
        ),
        timeout=10,
    )
    return response.user_id


async def login(auth: AuthServiceAsyncStub, email: str) -> auth_pb2.IssueTokenResponse:
    """The OAuth2 password grant over gRPC."""
    return await auth.IssueToken(
        auth_pb2.IssueTokenRequest(grant_type="password", username=email, password=PASSWORD),
        timeout=10,
    )


async def person(auth: AuthServiceAsyncStub, email: str) -> Person:
    """Sign ``email`` up and log in."""
    user_id = await sign_up(auth, email)
    grant = await login(auth, email)
    return Person(user_id, email, grant.access_token, grant.refresh_token)


def authorization(token: str | None) -> dict[str, str]:
    """REST headers carrying ``token`` (none for None)."""
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying ``token`` (none for None)."""
    return (("authorization", f"Bearer {token}"),) if token is not None else ()


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The RFC 9457 body of ``response``, checked to be a ``status`` problem without internals."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    # trace_id too, when the request is traced (a tracer provider is set up in this process).
    assert PROBLEM_FIELDS <= set(body) <= PROBLEM_FIELDS | {"trace_id"}, body
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    for leak in LEAKS:
        assert leak not in body["detail"], body["detail"]
    return body


async def code_of(call: Any) -> grpc.StatusCode:
    """The status code a gRPC call ends with (OK when it answers)."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@asynccontextmanager
async def gateway(
    *,
    users_port: int,
    auth_port: int,
    valkey_url: str,
    audit_port: int | None = None,
    peer: tuple[str, int] = ("127.0.0.1", 123),
    **settings: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """The real gateway in front of both services, built as in production, seeing its HTTP
    client come from ``peer`` (address, port).

    Unlike ``tests.support.gateway`` no verifier is injected: the gateway fetches the
    JWKS from the auth server (``GetJwks``) and checks sessions in Valkey, like a deployed one.
    """
    values: dict[str, Any] = {
        "users_target": f"127.0.0.1:{users_port}",
        "auth_target": f"127.0.0.1:{auth_port}",
        "valkey_url": SecretStr(component_valkey_url(valkey_url, "gateway")),
        "valkey_timeout_s": VALKEY_TIMEOUT_S,
        "forwarder_key": SecretStr(FORWARDER_KEY),  # one of the auth server's
    }
    if audit_port is not None:
        values["audit_target"] = f"127.0.0.1:{audit_port}"
    app = create_app(GatewaySettings(**(values | settings)))
    async with asgi_client(app, peer=peer) as http:
        yield http
