"""A real users server per test: fresh database, flushed Valkey, grpc.aio on 127.0.0.1:0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest

from portico.users.v1 import users_pb2_grpc
from portico_users.server import RunningServer, start
from tests.integration.users.support import users_settings

if TYPE_CHECKING:
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub


@pytest.fixture
async def server(database_url: str, valkey_url: str) -> AsyncIterator[RunningServer]:
    running = await start(users_settings(database_url=database_url, valkey_url=valkey_url))
    try:
        yield running
    finally:
        await running.stop(0)


@pytest.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> UserServiceAsyncStub:
    return users_pb2_grpc.UserServiceStub(channel)
