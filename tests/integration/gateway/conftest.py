"""HTTP → the real gateway → the real users service → real PostgreSQL and Valkey."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from portico_users.server import RunningServer
from tests.support.gateway import gateway_client
from tests.support.tokens import Tokens


@pytest.fixture
async def api(
    users_server: RunningServer, valkey_url: str, tokens: Tokens
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway, trusting the test signing key; every request carries an admin token."""
    async with gateway_client(
        users_port=users_server.port,
        valkey_url=valkey_url,
        token=await tokens.admin(),
        max_body_bytes=4096,
    ) as client:
        yield client
