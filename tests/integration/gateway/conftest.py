"""HTTP → the real gateway → the real users service → real PostgreSQL and Valkey."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from portico_gateway.app import create_app
from portico_gateway.config import GatewaySettings
from portico_users.server import RunningServer
from tests.asgi import asgi_client


@pytest.fixture
async def api(users_server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(users_target=f"127.0.0.1:{users_server.port}", max_body_bytes=4096)
    async with asgi_client(create_app(settings)) as client:
        yield client
