"""The real gateway (in-process ASGI) for the integration tier, trusting the test signing key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import valkey.asyncio as valkey_asyncio
from pydantic import SecretStr

from portico_common.tokens import JwksCache, TokenVerifier, ValkeySessions, jwks_from_file
from portico_gateway.app import create_app
from portico_gateway.config import GatewaySettings
from tests.support.asgi import asgi_client
from tests.support.auth import FORWARDER_KEY
from tests.support.stores import component_valkey_url
from tests.support.timeouts import VALKEY_TIMEOUT_S
from tests.support.tokens import signing_material


@asynccontextmanager
async def gateway_client(
    *,
    users_port: int,
    valkey_url: str,
    token: str | None = None,
    auth_port: int | None = None,
    audit_port: int | None = None,
    **settings: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a gateway in front of the users service on ``users_port``.

    Tokens are checked against the test signing key's JWK Set file (no auth server needed) and
    the sessions in the test's Valkey; ``token`` goes with every request when given.
    """
    values: dict[str, Any] = {
        "users_target": f"127.0.0.1:{users_port}",
        "valkey_url": SecretStr(component_valkey_url(valkey_url, "gateway")),
        "valkey_timeout_s": VALKEY_TIMEOUT_S,
        "forwarder_key": SecretStr(FORWARDER_KEY),
    }
    if auth_port is not None:
        values["auth_target"] = f"127.0.0.1:{auth_port}"
    if audit_port is not None:
        values["audit_target"] = f"127.0.0.1:{audit_port}"
    sessions: Any = valkey_asyncio.from_url(  # type: ignore[no-untyped-call]
        component_valkey_url(valkey_url, "gateway")
    )
    verifier = TokenVerifier(
        JwksCache(jwks_from_file(signing_material().jwks_file)),
        ValkeySessions(sessions),
        issuer="portico",
        audience="portico-api",
    )
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        app = create_app(GatewaySettings(**(values | settings)), verifier=verifier)
        async with asgi_client(app, headers=headers) as client:
            yield client
    finally:
        await sessions.aclose()
