"""HTTP → the real gateway → the real users service → real PostgreSQL and Valkey."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager

from portico_gateway.app import create_app
from portico_gateway.config import GatewaySettings
from portico_users.server import RunningServer, start
from tests.integration.users.support import users_settings


@pytest.fixture
async def users_server(database_url: str, valkey_url: str) -> AsyncIterator[RunningServer]:
    running = await start(users_settings(database_url=database_url, valkey_url=valkey_url))
    try:
        yield running
    finally:
        await running.stop(0)


@pytest.fixture
async def api(users_server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(users_target=f"127.0.0.1:{users_server.port}", max_body_bytes=4096)
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://gateway"
        ) as client,
    ):
        yield client
