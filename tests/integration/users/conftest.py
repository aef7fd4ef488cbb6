"""A real users server per test: fresh database, flushed Valkey, grpc.aio on 127.0.0.1:0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest

from portico.users.v1 import users_pb2_grpc
from portico_users.server import RunningServer
from tests.support.tokens import DefaultBearer, Tokens

if TYPE_CHECKING:
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub


@pytest.fixture
def server(users_server: RunningServer) -> RunningServer:
    return users_server


@pytest.fixture
async def channel(server: RunningServer, tokens: Tokens) -> AsyncIterator[grpc.aio.Channel]:
    """A channel whose calls carry an admin token unless they send their own."""
    interceptors = [DefaultBearer(await tokens.admin())]
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{server.port}", interceptors=interceptors
    ) as channel:
        yield channel


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> UserServiceAsyncStub:
    return users_pb2_grpc.UserServiceStub(channel)
