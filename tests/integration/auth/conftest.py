"""A real auth server per test, in front of a real users server, on fresh backends."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from portico.auth.v1 import auth_pb2_grpc
from portico_auth.server import RunningServer
from portico_users.server import RunningServer as UsersServer
from tests.support.auth import running_auth
from tests.support.stores import valkey_client
from tests.support.tokens import signing_material

if TYPE_CHECKING:
    from portico.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub


@pytest.fixture(autouse=True)
def _no_auth_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AUTH_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def key_file() -> Path:
    """The test process's signing key: the users servers trust it (tests.support.tokens)."""
    return signing_material().key_file


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change the auth server's settings."""
    return {}


@pytest.fixture
async def auth_server(
    database_url: str,
    valkey_url: str,
    users_server: UsersServer,
    key_file: Path,
    settings_overrides: dict[str, Any],
) -> AsyncIterator[RunningServer]:
    """A real auth service on 127.0.0.1:0 that reaches the test's users service."""
    async with running_auth(
        database_url=database_url,
        valkey_url=valkey_url,
        users_port=users_server.port,
        key_file=key_file,
        **settings_overrides,
    ) as running:
        yield running


@pytest.fixture
async def channel(auth_server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{auth_server.port}") as channel:
        yield channel


@pytest.fixture
def auth(channel: grpc.aio.Channel) -> AuthServiceAsyncStub:
    return auth_pb2_grpc.AuthServiceStub(channel)


@pytest.fixture
async def valkey(valkey_url: str) -> AsyncIterator[Any]:
    """A client of the test's Valkey, to look at the session keys."""
    async with valkey_client(valkey_url) as client:
        yield client
