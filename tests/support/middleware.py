"""A small FastAPI app around the gateway's own middlewares, over a real Valkey.

The app's lifespan yields ``{"valkey": client}`` as the gateway's does, so the middlewares find
the client in ``scope["state"]``. :class:`HeaderPrincipal` stands in for the authentication
middleware: it puts a :class:`~portico_common.tokens.Principal` for the user named in
``X-Test-User`` into the scope, so these tests do not depend on token verification.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import valkey.asyncio as valkey_asyncio
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from portico_common.tokens import Principal
from portico_gateway.errors import install_error_handlers
from portico_gateway.middleware.idempotency import storable
from portico_gateway.middleware.request_id import RequestIdMiddleware
from tests.support.asgi import per_request_state
from tests.support.timeouts import VALKEY_TIMEOUT_S

USER_HEADER = "X-Test-User"
Middleware = tuple[Any, dict[str, Any]]  # (middleware class, its options)


class HeaderPrincipal:
    """Test stand-in for AuthenticationMiddleware: ``X-Test-User: u1`` → principal ``u1``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (user := Headers(scope=scope).get(USER_HEADER)):
            scope.setdefault("state", {})["principal"] = Principal(
                user_id=user,
                session_id="s1",
                roles=frozenset(),
                token_id="t1",
                expires_at=0,
            )
        await self.app(scope, receive, send)


class ClientFor(Protocol):
    """``client(address)``: an httpx client whose requests come from ``address``."""

    def __call__(self, address: str = ...) -> httpx.AsyncClient: ...


@dataclass
class Calls:
    """How many times each test route's handler ran."""

    counts: dict[str, int] = field(default_factory=dict)

    def hit(self, name: str) -> int:
        self.counts[name] = self.counts.get(name, 0) + 1
        return self.counts[name]


def closed_port_url() -> str:
    """A Valkey URL on a loopback port nobody listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def build_app(valkey_url: str, middleware: list[Middleware], calls: Calls) -> FastAPI:
    """Test routes behind ``middleware`` (innermost first), the test principal, request ids."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        client: Any = valkey_asyncio.Valkey.from_url(
            valkey_url, socket_timeout=VALKEY_TIMEOUT_S, socket_connect_timeout=VALKEY_TIMEOUT_S
        )
        try:
            yield {"valkey": client}
        finally:
            await client.aclose()

    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app, retry_after_s=1)

    @app.get("/v1/things")
    async def list_things() -> dict[str, int]:
        return {"calls": calls.hit("list")}

    @app.post("/v1/things", status_code=201)
    async def create_thing(request: Request) -> Response:
        storable(request.scope)  # as the transcoded routes do before calling an upstream
        number = calls.hit("create")
        body = await request.body()
        return JSONResponse(
            {"number": number, "echo": body.decode()},
            status_code=201,
            headers={"Location": f"/v1/things/{number}", "ETag": f'"{number}"'},
        )

    @app.post("/v1/slow", status_code=201)
    async def slow(request: Request) -> dict[str, int]:
        storable(request.scope)
        number = calls.hit("slow")
        await asyncio.sleep(0.4)
        return {"number": number}

    @app.post("/v1/flaky")
    async def flaky(request: Request) -> Response:
        storable(request.scope)
        number = calls.hit("flaky")
        if number == 1:
            return JSONResponse({"number": number}, status_code=503)
        return JSONResponse({"number": number}, status_code=201)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> str:
        return "ok"

    for cls, options in middleware:
        app.add_middleware(cls, **options)
    app.add_middleware(HeaderPrincipal)
    app.add_middleware(RequestIdMiddleware)
    return app


@asynccontextmanager
async def clients(app: FastAPI) -> AsyncIterator[ClientFor]:
    """``client(address)``: an httpx client of ``app`` whose requests come from ``address``."""
    async with AsyncExitStack() as stack:
        manager = await stack.enter_async_context(LifespanManager(per_request_state(app)))
        made: dict[str, httpx.AsyncClient] = {}

        def client(address: str = "192.0.2.1") -> httpx.AsyncClient:
            if address not in made:
                transport = httpx.ASGITransport(app=manager.app, client=(address, 40000))
                made[address] = httpx.AsyncClient(transport=transport, base_url="http://gateway")
                stack.push_async_callback(made[address].aclose)
            return made[address]

        yield client
