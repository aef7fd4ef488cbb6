"""Who may call what: every REST route and every RPC by caller, against an outcome table.

The table (:data:`EXPECTED`) is written out by hand from what the protos' comments promise; it
is not derived from the ``portico.access.v1.rule`` options under test. Callers:

* ``anonymous``: no ``Authorization`` at all;
* ``self``: a plain user (role ``user``), the user the request targets (``{id}``, the refresh
  token it sends) when it targets one;
* ``other``: another plain user;
* ``admin``: a user whose email is in the auth server's ``admin_emails``.

Every caller signed up and logged in through the real auth service (tokens are real, sessions
live in Valkey). REST goes through the real gateway (which fetches the JWKS from the auth
server); gRPC goes straight to the users and auth servers, whose interceptors check on their
own. Then the gateway's own routes (health, readiness, metrics, docs in dev and in production)
and the services' gRPC health checking and reflection, which need no token.

The number of cases is ``len(CASES)``; independently of this module,
``python -m pytest tests/integration/security/test_authorization_matrix.py --collect-only -q``
counts them.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from portico.audit.v1 import audit_pb2
from portico.auth.v1 import auth_pb2
from portico.users.v1 import users_pb2
from portico_auth.server import RunningServer as AuthServer
from portico_users.server import RunningServer as UsersServer
from tests.support.security import (
    DISPLAY_NAME,
    PASSWORD,
    People,
    authorization,
    code_of,
    gateway,
    metadata,
    problem,
)

if TYPE_CHECKING:
    from portico.audit.v1.audit_pb2_grpc import AuditServiceAsyncStub
    from portico.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub

ANONYMOUS, SELF, OTHER, ADMIN = "anonymous", "self", "other", "admin"
CALLERS = (ANONYMOUS, SELF, OTHER, ADMIN)
OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED

Outcome = tuple[int, grpc.StatusCode]  # (REST status, gRPC code)
REFUSED: set[int | grpc.StatusCode] = {401, 403, UNAUTHENTICATED, DENIED}
CHANGE_THE_TARGET = ("UserService.UpdateUser", "UserService.DeleteUser")

#: RPC → caller → (REST status, gRPC code). Written by hand; see the module docstring.
EXPECTED: dict[str, dict[str, Outcome]] = {
    "UserService.CreateUser": {
        ANONYMOUS: (401, UNAUTHENTICATED),
        SELF: (403, DENIED),
        OTHER: (403, DENIED),
        ADMIN: (201, OK),
    },
    "UserService.GetCurrentUser": {
        ANONYMOUS: (401, UNAUTHENTICATED),
        SELF: (200, OK),
        OTHER: (200, OK),
        ADMIN: (200, OK),
    },
    "UserService.GetUser": {
        ANONYMOUS: (401, UNAUTHENTICATED),
        SELF: (200, OK),
        OTHER: (403, DENIED),
        ADMIN: (200, OK),
    },
    "AuditService.ListAuditEvents": {
        ANONYMOUS: (401, UNAUTHENTICATED),
        SELF: (403, DENIED),
        OTHER: (403, DENIED),
        ADMIN: (200, OK),
    },
    "UserService.ListUsers": {
        ANONYMOUS: (401, UNAUTHENTICATED),
        SELF: (403, DENIED),
        OTHER: (403, DENIED),
        ADMIN: (200, OK),
    },
    "UserService.UpdateUser": {
        ANONYMOUS: (401, UNAUTHENTICATED),
        SELF: (200, OK),
        OTHER: (403, DENIED),
        ADMIN: (200, OK),
    },
    "UserService.DeleteUser": {
        ANONYMOUS: (401, UNAUTHENTICATED),
        SELF: (204, OK),
        OTHER: (403, DENIED),
        ADMIN: (204, OK),
    },
    # Public: each takes its own credential (a password, a refresh token) or none; the caller's
    # access token, if any, changes nothing.
    "AuthService.SignUp": {  # 201 Created with Location (issue 14)
        ANONYMOUS: (201, OK),
        SELF: (201, OK),
        OTHER: (201, OK),
        ADMIN: (201, OK),
    },
    "AuthService.IssueToken": {
        ANONYMOUS: (200, OK),
        SELF: (200, OK),
        OTHER: (200, OK),
        ADMIN: (200, OK),
    },
    "AuthService.RefreshToken": {
        ANONYMOUS: (200, OK),
        SELF: (200, OK),
        OTHER: (200, OK),
        ADMIN: (200, OK),
    },
    "AuthService.Logout": {
        ANONYMOUS: (204, OK),
        SELF: (204, OK),
        OTHER: (204, OK),
        ADMIN: (204, OK),
    },
    "AuthService.GetJwks": {
        ANONYMOUS: (200, OK),
        SELF: (200, OK),
        OTHER: (200, OK),
        ADMIN: (200, OK),
    },
    # Admins only, even for the user whose sessions they are (issue 14).
    "AuthService.ListUserSessions": {
        ANONYMOUS: (401, UNAUTHENTICATED),
        SELF: (403, DENIED),
        OTHER: (403, DENIED),
        ADMIN: (200, OK),
    },
    "AuthService.EndUserSessions": {
        ANONYMOUS: (401, UNAUTHENTICATED),
        SELF: (403, DENIED),
        OTHER: (403, DENIED),
        ADMIN: (200, OK),
    },
}


@dataclass(frozen=True)
class World:
    """The servers and the people of one test."""

    api: httpx.AsyncClient
    users: UserServiceAsyncStub
    auth: AuthServiceAsyncStub
    people: People
    audit: AuditServiceAsyncStub

    def token(self, caller: str) -> str | None:
        return None if caller == ANONYMOUS else getattr(self.people, caller).access_token


def new_email() -> str:
    return f"new-{uuid.uuid4().hex[:12]}@example.com"


# ------------------------------------------------------------------ REST: one request per RPC

RestCall = Callable[[World, dict[str, str]], Awaitable[httpx.Response]]


def _target(world: World) -> str:
    return f"/v1/users/{world.people.self.user_id}"


REST: dict[str, RestCall] = {
    "UserService.CreateUser": lambda w, h: w.api.post(
        "/v1/users", json={"email": new_email(), "display_name": "New"}, headers=h
    ),
    "UserService.GetCurrentUser": lambda w, h: w.api.get("/v1/users/me", headers=h),
    "UserService.GetUser": lambda w, h: w.api.get(_target(w), headers=h),
    "UserService.ListUsers": lambda w, h: w.api.get("/v1/users", headers=h),
    "AuditService.ListAuditEvents": lambda w, h: w.api.get("/v1/audit/events", headers=h),
    "UserService.UpdateUser": lambda w, h: w.api.patch(
        _target(w), json={"display_name": "Renamed"}, headers=h
    ),
    "UserService.DeleteUser": lambda w, h: w.api.delete(_target(w), headers=h),
    "AuthService.SignUp": lambda w, h: w.api.post(
        "/v1/auth/signup",
        json={
            "email": new_email(),
            "display_name": "New",
            "password": PASSWORD,
            "idempotency_key": str(uuid.uuid4()),
        },
        headers=h,
    ),
    "AuthService.IssueToken": lambda w, h: w.api.post(
        "/v1/auth/token",
        data={"grant_type": "password", "username": w.people.self.email, "password": PASSWORD},
        headers=h,
    ),
    "AuthService.RefreshToken": lambda w, h: w.api.post(
        "/v1/auth/refresh", json={"refresh_token": w.people.self.refresh_token}, headers=h
    ),
    "AuthService.Logout": lambda w, h: w.api.post(
        "/v1/auth/logout", json={"refresh_token": w.people.self.refresh_token}, headers=h
    ),
    "AuthService.GetJwks": lambda w, h: w.api.get("/.well-known/jwks.json", headers=h),
    "AuthService.ListUserSessions": lambda w, h: w.api.get(
        f"/v1/auth/users/{w.people.self.user_id}/sessions", headers=h
    ),
    "AuthService.EndUserSessions": lambda w, h: w.api.delete(
        f"/v1/auth/users/{w.people.self.user_id}/sessions", headers=h
    ),
}

# ------------------------------------------------------------------ gRPC: one call per RPC

Metadata = tuple[tuple[str, str], ...]
GrpcCall = Callable[[World, Metadata], Awaitable[Any]]

GRPC: dict[str, GrpcCall] = {
    "UserService.CreateUser": lambda w, md: w.users.CreateUser(
        users_pb2.CreateUserRequest(email=new_email(), display_name="New"), metadata=md, timeout=5
    ),
    "UserService.GetCurrentUser": lambda w, md: w.users.GetCurrentUser(
        users_pb2.GetCurrentUserRequest(), metadata=md, timeout=5
    ),
    "UserService.GetUser": lambda w, md: w.users.GetUser(
        users_pb2.GetUserRequest(id=w.people.self.user_id), metadata=md, timeout=5
    ),
    "UserService.ListUsers": lambda w, md: w.users.ListUsers(
        users_pb2.ListUsersRequest(), metadata=md, timeout=5
    ),
    "AuditService.ListAuditEvents": lambda w, md: w.audit.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(), metadata=md, timeout=5
    ),
    "UserService.UpdateUser": lambda w, md: w.users.UpdateUser(
        users_pb2.UpdateUserRequest(
            id=w.people.self.user_id,
            user=users_pb2.UserUpdate(display_name="Renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=md,
        timeout=5,
    ),
    "UserService.DeleteUser": lambda w, md: w.users.DeleteUser(
        users_pb2.DeleteUserRequest(id=w.people.self.user_id), metadata=md, timeout=5
    ),
    "AuthService.SignUp": lambda w, md: w.auth.SignUp(
        auth_pb2.SignUpRequest(
            email=new_email(),
            display_name="New",
            password=PASSWORD,
            idempotency_key=str(uuid.uuid4()),
        ),
        metadata=md,
        timeout=10,
    ),
    "AuthService.IssueToken": lambda w, md: w.auth.IssueToken(
        auth_pb2.IssueTokenRequest(
            grant_type="password", username=w.people.self.email, password=PASSWORD
        ),
        metadata=md,
        timeout=10,
    ),
    "AuthService.RefreshToken": lambda w, md: w.auth.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=w.people.self.refresh_token),
        metadata=md,
        timeout=5,
    ),
    "AuthService.Logout": lambda w, md: w.auth.Logout(
        auth_pb2.LogoutRequest(refresh_token=w.people.self.refresh_token), metadata=md, timeout=5
    ),
    "AuthService.GetJwks": lambda w, md: w.auth.GetJwks(
        auth_pb2.GetJwksRequest(), metadata=md, timeout=5
    ),
    "AuthService.ListUserSessions": lambda w, md: w.auth.ListUserSessions(
        auth_pb2.ListUserSessionsRequest(user_id=w.people.self.user_id), metadata=md, timeout=5
    ),
    "AuthService.EndUserSessions": lambda w, md: w.auth.EndUserSessions(
        auth_pb2.EndUserSessionsRequest(user_id=w.people.self.user_id), metadata=md, timeout=5
    ),
}


@dataclass(frozen=True)
class RpcCase:
    rpc: str
    caller: str
    transport: str  # "rest" or "grpc"

    @property
    def expected(self) -> int | grpc.StatusCode:
        rest, code = EXPECTED[self.rpc][self.caller]
        return rest if self.transport == "rest" else code

    @property
    def id(self) -> str:
        expected = self.expected
        shown = expected if isinstance(expected, int) else expected.name
        return f"{self.transport}-{self.rpc.split('.')[1]}-{self.caller}-{shown}"


@dataclass(frozen=True)
class OpenCase:
    """A route or RPC outside the Portico RPCs: (surface, caller) → expected outcome."""

    surface: str
    caller: str
    expected: int | grpc.StatusCode

    @property
    def id(self) -> str:
        expected = self.expected
        shown = expected if isinstance(expected, int) else expected.name
        return f"{self.surface}-{self.caller}-{shown}"


#: Every RPC, caller and transport.
RPC_CASES = [
    RpcCase(rpc, caller, transport)
    for rpc in EXPECTED
    for caller in CALLERS
    for transport in ("rest", "grpc")
]
#: The gateway's own probes: open to anyone.
PROBE_CASES = [
    OpenCase("GET /healthz", ANONYMOUS, 200),
    OpenCase("GET /readyz", ANONYMOUS, 200),
    OpenCase("GET /metrics", ANONYMOUS, 200),
]
#: API documentation: open in dev; admins only in production.
DOCS_CASES = [
    OpenCase("dev GET /docs", ANONYMOUS, 200),
    OpenCase("dev GET /docs", SELF, 200),
    OpenCase("dev GET /docs", OTHER, 200),
    OpenCase("dev GET /docs", ADMIN, 200),
    OpenCase("dev GET /openapi.json", ANONYMOUS, 200),
    OpenCase("dev GET /openapi.json", SELF, 200),
    OpenCase("dev GET /openapi.json", OTHER, 200),
    OpenCase("dev GET /openapi.json", ADMIN, 200),
    OpenCase("production GET /docs", ANONYMOUS, 401),
    OpenCase("production GET /docs", SELF, 403),
    OpenCase("production GET /docs", OTHER, 403),
    OpenCase("production GET /docs", ADMIN, 200),
    OpenCase("production GET /openapi.json", ANONYMOUS, 401),
    OpenCase("production GET /openapi.json", SELF, 403),
    OpenCase("production GET /openapi.json", OTHER, 403),
    OpenCase("production GET /openapi.json", ADMIN, 200),
]
#: gRPC health checking and reflection on both servers: no token needed.
GRPC_OPEN_CASES = [
    OpenCase("users grpc.health.v1.Health/Check", ANONYMOUS, OK),
    OpenCase("users ServerReflection/ListServices", ANONYMOUS, OK),
    OpenCase("auth grpc.health.v1.Health/Check", ANONYMOUS, OK),
    OpenCase("auth ServerReflection/ListServices", ANONYMOUS, OK),
]
#: Every case of this module (the tests below are parametrized over these lists).
CASES: list[RpcCase | OpenCase] = [*RPC_CASES, *PROBE_CASES, *DOCS_CASES, *GRPC_OPEN_CASES]


def test_the_table_covers_every_routed_rpc_and_every_caller() -> None:
    from portico_gateway.app import upstream_services
    from portico_gateway.config import GatewaySettings

    served = {
        f"{svc.name}.{m.name}"
        for _, svc in upstream_services(GatewaySettings()).values()
        for m in svc.methods
    }
    assert set(EXPECTED) == served == set(REST) == set(GRPC)
    assert all(set(row) == set(CALLERS) for row in EXPECTED.values())


@pytest.fixture
def world(
    api: httpx.AsyncClient,
    users: UserServiceAsyncStub,
    auth: AuthServiceAsyncStub,
    people: People,
    audit: AuditServiceAsyncStub,
) -> World:
    return World(api, users, auth, people, audit)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in RPC_CASES])
async def test_rpc_access(case: RpcCase, world: World) -> None:
    token = world.token(case.caller)
    if case.transport == "rest":
        response = await REST[case.rpc](world, authorization(token))
        assert response.status_code == case.expected, response.text
        if response.status_code >= 400:
            problem(response, response.status_code)
        if response.status_code == 401:
            assert response.headers["www-authenticate"].startswith("Bearer ")
    else:
        assert await code_of(GRPC[case.rpc](world, metadata(token))) == case.expected
    if case.rpc in CHANGE_THE_TARGET and case.expected in REFUSED:  # so nothing happened to it
        target = await world.users.GetUser(
            users_pb2.GetUserRequest(id=world.people.self.user_id),
            metadata=metadata(world.people.admin.access_token),
            timeout=5,
        )
        assert target.user.display_name == DISPLAY_NAME


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in PROBE_CASES])
async def test_probes_are_open(case: OpenCase, api: httpx.AsyncClient) -> None:
    path = case.surface.split(" ", 1)[1]
    response = await api.get(path)
    assert response.status_code == case.expected, response.text


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in DOCS_CASES])
async def test_docs_access(
    case: OpenCase,
    users_server: UsersServer,
    auth_server: AuthServer,
    valkey_url: str,
    people: People,
) -> None:
    environment, _, path = case.surface.split(" ", 2)
    token = None if case.caller == ANONYMOUS else getattr(people, case.caller).access_token
    async with gateway(
        users_port=users_server.port,
        auth_port=auth_server.port,
        valkey_url=valkey_url,
        environment=environment,
    ) as api:
        response = await api.get(path, headers=authorization(token))
    assert response.status_code == case.expected, response.text
    if case.expected == 401:
        problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer ")
    elif case.expected == 403:
        problem(response, 403)
    elif path == "/openapi.json":
        assert response.json()["openapi"].startswith("3.")
    else:
        assert "swagger-ui" in response.text


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in GRPC_OPEN_CASES])
async def test_grpc_health_and_reflection_are_open(
    case: OpenCase, users_channel: grpc.aio.Channel, auth_channel: grpc.aio.Channel
) -> None:
    server, what = case.surface.split(" ", 1)
    channel = users_channel if server == "users" else auth_channel
    service = "portico.users.v1.UserService" if server == "users" else "portico.auth.v1.AuthService"
    if what.startswith("grpc.health"):
        health: Any = health_pb2_grpc.HealthStub(channel)  # the stubs type sync channels only
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        return
    reflection: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = [r async for r in reflection.ServerReflectionInfo(iter([request]), timeout=5)]
    assert service in {s.name for s in replies[0].list_services_response.service}
