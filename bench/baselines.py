"""Same-run baselines, each its own process under uvicorn (configured as the gateway is).

* ``floor``: a bare ASGI app that answers every request with the same fixed JSON user. What
  uvicorn + HTTP/1.1 + the load generator cost on this machine: no framework, no I/O.
* ``monolith``: a FastAPI route ``GET /v1/users/{id}`` that reads the cached user from the
  same Valkey the users service fills (``HGET <prefix>user:<id> d``), decodes it and answers
  the same JSON (and ``ETag``) as the gateway. The cost of the same read without the gateway
  → gRPC hop.

``python -m bench.baselines floor --port P --body-file F`` /
``python -m bench.baselines monolith --port P --valkey-url URL``.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from valkey.asyncio import Valkey

from portico.users.v1 import users_pb2

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_KEY_PREFIX = "portico:users:v1:"  # USERS_VALKEY__KEY_PREFIX's default


def floor_app(body: bytes) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """A raw ASGI app that answers ``body`` as JSON to every HTTP request."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def monolith_app(valkey_url: str, key_prefix: str = DEFAULT_KEY_PREFIX) -> FastAPI:
    """FastAPI reading the users service's cache entry directly and serving the gateway's JSON."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.valkey = Valkey.from_url(valkey_url)
        try:
            yield
        finally:
            await app.state.valkey.aclose()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/v1/users/{user_id}")
    async def get_user(user_id: str, request: Request) -> Response:
        client: Valkey = request.app.state.valkey
        data = await client.hget(f"{key_prefix}user:{user_id}", "d")  # type: ignore[misc]
        if data is None:
            return JSONResponse({"title": "Not Found"}, status_code=404)
        user = users_pb2.User.FromString(data)
        content = json_format.MessageToDict(
            user, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        return JSONResponse(content, headers={"ETag": f'"{user.etag}"'})

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__)
    parser.add_argument("kind", choices=("floor", "monolith"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-file", type=Path, help="floor: the JSON to answer")
    parser.add_argument("--valkey-url", help="monolith: the users service's Valkey")
    parser.add_argument("--key-prefix", default=DEFAULT_KEY_PREFIX)
    args = parser.parse_args(argv)
    app: Any
    if args.kind == "floor":
        if args.body_file is None:
            parser.error("floor needs --body-file")
        app = floor_app(args.body_file.read_bytes())
    else:
        if args.valkey_url is None:
            parser.error("monolith needs --valkey-url")
        app = monolith_app(args.valkey_url, args.key_prefix)
    # As portico_gateway.__main__ configures uvicorn: the monolith logs each request at INFO as
    # the gateway does; the floor is the minimum, without logging.
    level = "warning" if args.kind == "floor" else "info"
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level=level, server_header=False)


if __name__ == "__main__":
    main()
