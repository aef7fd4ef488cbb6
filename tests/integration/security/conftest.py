"""Real servers for the security tests: users and auth services, the gateway in front of both.

The auth server signs with the test process's key (``tests.support.tokens``), which the users
servers trust through their JWK Set file and the gateway through the auth server's ``GetJwks``.
``ADMIN_EMAIL`` is in the auth server's ``admin_emails``: signing up with it gives role admin.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest

from portico.audit.v1 import audit_pb2_grpc
from portico.auth.v1 import auth_pb2_grpc
from portico.users.v1 import users_pb2_grpc
from portico_audit.server import RunningServer as AuditServer
from portico_auth.server import RunningServer as AuthServer
from portico_users.server import RunningServer as UsersServer
from tests.support.auth import running_auth
from tests.support.security import ADMIN_EMAIL, People, gateway, person
from tests.support.stores import valkey_client
from tests.support.tokens import signing_material

if TYPE_CHECKING:
    from portico.audit.v1.audit_pb2_grpc import AuditServiceAsyncStub
    from portico.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Auth server settings: one admin email (override in a module to change more)."""
    return {"admin_emails": [ADMIN_EMAIL]}


@pytest.fixture
async def auth_server(
    database_url: str,
    valkey_url: str,
    users_server: UsersServer,
    settings_overrides: dict[str, Any],
) -> AsyncIterator[AuthServer]:
    """A real auth service on 127.0.0.1:0 in front of the test's users service."""
    async with running_auth(
        database_url=database_url,
        valkey_url=valkey_url,
        users_port=users_server.port,
        key_file=signing_material().key_file,
        **settings_overrides,
    ) as running:
        yield running


@pytest.fixture
async def auth_channel(auth_server: AuthServer) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the auth server whose calls carry no token unless they send one."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{auth_server.port}") as channel:
        yield channel


@pytest.fixture
async def users_channel(users_server: UsersServer) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the users server whose calls carry no token unless they send one."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{users_server.port}") as channel:
        yield channel


@pytest.fixture
async def audit_channel(audit_server: AuditServer) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the audit server whose calls carry no token unless they send one."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{audit_server.port}") as channel:
        yield channel


@pytest.fixture
def audit(audit_channel: grpc.aio.Channel) -> AuditServiceAsyncStub:
    return audit_pb2_grpc.AuditServiceStub(audit_channel)


@pytest.fixture
def auth(auth_channel: grpc.aio.Channel) -> AuthServiceAsyncStub:
    return auth_pb2_grpc.AuthServiceStub(auth_channel)


@pytest.fixture
def users(users_channel: grpc.aio.Channel) -> UserServiceAsyncStub:
    return users_pb2_grpc.UserServiceStub(users_channel)


@pytest.fixture
async def valkey(valkey_url: str) -> AsyncIterator[Any]:
    """A client of the test's Valkey, to look at (and delete) session keys."""
    async with valkey_client(valkey_url) as client:
        yield client


@pytest.fixture
async def api(
    users_server: UsersServer, auth_server: AuthServer, audit_server: AuditServer, valkey_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway (dev mode) in front of the servers; requests carry no token by default."""
    async with gateway(
        users_port=users_server.port,
        auth_port=auth_server.port,
        audit_port=audit_server.port,
        valkey_url=valkey_url,
    ) as client:
        yield client


@pytest.fixture
async def people(auth: AuthServiceAsyncStub) -> People:
    """Two plain users and an admin, each signed up and logged in through the auth service."""
    me, other, admin = await asyncio.gather(
        person(auth, "self@example.com"),
        person(auth, "other@example.com"),
        person(auth, ADMIN_EMAIL),
    )
    return People(self=me, other=other, admin=admin)
