"""The gateway over HTTP (in-process ASGI) in front of a real grpc.aio server with canned answers.

``FakeUsers`` is a real UserService servicer on 127.0.0.1:0 whose answers are chosen by the
request (an email ``code-NOT_FOUND`` aborts with NOT_FOUND, …), so each mapping of the gateway can
be driven over the wire without a database. The integration tier runs the real service.

The gateway trusts :data:`AUTHORITY`'s key (in-memory sessions); ``http`` sends an admin token
with every request, so these tests are about transcoding. Authorization has its own tests, with
the real auth service, in the integration tier.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from portico.users.v1 import users_pb2, users_pb2_grpc
from portico_gateway.app import create_app
from portico_gateway.config import GatewaySettings
from tests.support.asgi import asgi_client
from tests.support.token_authority import TokenAuthority, bearer

AUTHORITY = TokenAuthority()
ADMIN = bearer(AUTHORITY.admin_token())


def gateway_app(settings: GatewaySettings, **kwargs: Any) -> FastAPI:
    """``create_app`` trusting :data:`AUTHORITY`."""
    return create_app(settings, verifier=AUTHORITY.verifier(), **kwargs)


Context = grpc.aio.ServicerContext[Any, Any]


def _details(code: grpc.StatusCode, *extra: Any) -> tuple[tuple[str, bytes], ...]:
    status = status_pb2.Status(code=code.value[0], message=code.name)
    for detail in extra:
        status.details.add().Pack(detail)
    return (("grpc-status-details-bin", status.SerializeToString()),)


class FakeUsers(users_pb2_grpc.UserServiceServicer):
    def __init__(self) -> None:
        self.seen_metadata: list[dict[str, str]] = []

    async def CreateUser(  # noqa: N802
        self, request: users_pb2.CreateUserRequest, context: Context
    ) -> users_pb2.CreateUserResponse:
        if request.email.startswith("code-"):
            name = request.email.removeprefix("code-").split("@")[0]
            if name == "ETAG":
                info = error_details_pb2.ErrorInfo(reason="ETAG_MISMATCH", domain="test")
                code = grpc.StatusCode.FAILED_PRECONDITION
                await context.abort(code, "etag mismatch", _details(code, info))
            code = grpc.StatusCode[name]
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                bad = error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field="email", description="must be a valid email address"
                        )
                    ]
                )
                await context.abort(code, "invalid request: email", _details(code, bad))
            await context.abort(code, "secret SQL: SELECT * FROM users.users")
        user = users_pb2.User(
            id="6f1c1d2e-8f9a-4b7c-9d0e-1f2a3b4c5d6e",
            email=request.email,
            display_name=request.display_name,
            etag="e1",
        )
        return users_pb2.CreateUserResponse(user=user)

    async def GetCurrentUser(  # noqa: N802
        self, request: users_pb2.GetCurrentUserRequest, context: Context
    ) -> users_pb2.GetCurrentUserResponse:
        return users_pb2.GetCurrentUserResponse(user=users_pb2.User(id="me", etag="e1"))

    async def GetUser(  # noqa: N802
        self, request: users_pb2.GetUserRequest, context: Context
    ) -> users_pb2.GetUserResponse:
        self.seen_metadata.append(dict(context.invocation_metadata() or ()))  # type: ignore[arg-type]
        if request.id == "slow":
            await asyncio.sleep(5)
        return users_pb2.GetUserResponse(user=users_pb2.User(id=request.id, etag="e1"))

    async def ListUsers(  # noqa: N802
        self, request: users_pb2.ListUsersRequest, context: Context
    ) -> users_pb2.ListUsersResponse:
        size = str(request.page_size) if request.HasField("page_size") else "unset"
        return users_pb2.ListUsersResponse(next_page_token=f"{size}|{request.page_token}")

    async def UpdateUser(  # noqa: N802
        self, request: users_pb2.UpdateUserRequest, context: Context
    ) -> users_pb2.UpdateUserResponse:
        user = users_pb2.User(
            id=request.id,
            display_name=",".join(request.update_mask.paths),
            email=request.user.email,
            etag=request.etag or "none",
        )
        return users_pb2.UpdateUserResponse(user=user)

    async def DeleteUser(  # noqa: N802
        self, request: users_pb2.DeleteUserRequest, context: Context
    ) -> users_pb2.DeleteUserResponse:
        return users_pb2.DeleteUserResponse()


@dataclass
class Upstream:
    target: str
    servicer: FakeUsers
    health: health_aio.HealthServicer


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = grpc.aio.server()
    servicer = FakeUsers()
    users_pb2_grpc.add_UserServiceServicer_to_server(servicer, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield Upstream(f"127.0.0.1:{port}", servicer, health)
    await server.stop(None)


def settings_for(target: str, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "users_target": target,
        "auth_target": target,  # the fake serves health for all; auth RPCs are not called here
        "audit_target": target,
        "rpc_timeout_s": 2.0,
        "max_body_bytes": 2048,
    }
    return GatewaySettings(**(values | overrides))


@pytest.fixture
async def http(upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(gateway_app(settings_for(upstream.target)), headers=ADMIN) as client:
        yield client
