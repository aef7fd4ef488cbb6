"""An httpx client for an ASGI app, with its lifespan run (httpx's ASGITransport does not)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send


def per_request_state(app: ASGIApp) -> ASGIApp:
    """Give each request a shallow copy of the lifespan state, as the ASGI spec (and uvicorn) do.

    asgi-lifespan hands every request the *same* dict, so what one request stores there (its
    principal) would leak into the next.
    """

    async def copying(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan" and "state" in scope:
            scope["state"] = dict(scope["state"])
        await app(scope, receive, send)

    return copying


@asynccontextmanager
async def asgi_client(
    app: FastAPI,
    *,
    headers: dict[str, str] | None = None,
    peer: tuple[str, int] = ("127.0.0.1", 123),
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app``; ``headers`` go with every request (e.g. a bearer token); ``peer``
    is the (address, port) the app sees the requests come from, as uvicorn reports its TCP peer."""
    async with (
        LifespanManager(per_request_state(app)) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, client=peer),
            base_url="http://gateway",
            headers=headers,
        ) as client,
    ):
        yield client
