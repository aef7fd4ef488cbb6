"""Same-run baselines, each its own process under uvicorn (configured as the gateway is).

* ``floor``: a bare ASGI app that answers every request with the same fixed JSON user. What
  uvicorn + HTTP/1.1 + the load generator cost on this machine: no framework, no I/O.
* ``monolith``: a FastAPI route ``GET /v1/users/{id}`` that reads the cached user from the
  same Valkey the users service fills (``HGET <prefix>user:<id> d``), decodes it and answers
  the same JSON (and ``ETag``) as the gateway. The cost of the same read without the gateway
  → gRPC hop. It checks no access token (the load sends one all the same).
* ``monolith_verify``: the monolith that also checks the access token once per request, as a
  real single-process service would: :func:`portico_common.access.check` with GetUser's
  ``portico.access.v1.rule`` (``TokenVerifier.verify``: JWKS fetched once from the auth
  service, Ed25519 signature and claims, one session ``EXISTS`` in Valkey; then owner or admin).
  401 / 403 as the gateway answers them. The full path checks the token twice (gateway, users).

``python -m bench.baselines floor --port P --body-file F`` /
``python -m bench.baselines monolith --port P --valkey-url URL`` /
``python -m bench.baselines monolith_verify --port P --valkey-url URL --auth-target HOST:PORT``.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from valkey.asyncio import Valkey

from portico.users.v1 import users_pb2
from portico_common.access import (
    AccessError,
    SessionCheckUnavailable,
    Unauthenticated,
    check,
    rule_of,
)
from portico_common.tokens import JwksCache, TokenVerifier, ValkeySessions, jwks_from_auth_service

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_KEY_PREFIX = "portico:users:v1:"  # USERS_VALKEY__KEY_PREFIX's default
#: As the gateway's and users service's defaults (``*_TOKEN_ISSUER``, ``*_SESSION_KEY_PREFIX``…).
TOKEN_ISSUER, TOKEN_AUDIENCE, SESSION_KEY_PREFIX = "portico", "portico-api", "portico:auth:v1:"


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


def monolith_app(
    valkey_url: str,
    key_prefix: str = DEFAULT_KEY_PREFIX,
    *,
    auth_target: str | None = None,
    sessions_url: str | None = None,
) -> FastAPI:
    """FastAPI reading the users service's cache entry directly and serving the gateway's JSON.

    With ``auth_target`` (the auth service, for the JWKS) every request's token is checked
    against GetUser's access rule first.
    """
    rule = rule_of(users_pb2.DESCRIPTOR.services_by_name["UserService"].methods_by_name["GetUser"])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.valkey = Valkey.from_url(valkey_url)
        sessions = Valkey.from_url(sessions_url) if sessions_url else app.state.valkey
        app.state.verifier = None
        channel = grpc.aio.insecure_channel(auth_target) if auth_target else None
        if channel is not None:
            app.state.verifier = TokenVerifier(
                JwksCache(jwks_from_auth_service(channel)),
                ValkeySessions(sessions, key_prefix=SESSION_KEY_PREFIX),
                issuer=TOKEN_ISSUER,
                audience=TOKEN_AUDIENCE,
            )
        try:
            yield
        finally:
            if channel is not None:
                await channel.close()
            if sessions is not app.state.valkey:
                await sessions.aclose()
            await app.state.valkey.aclose()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/v1/users/{user_id}")
    async def get_user(user_id: str, request: Request) -> Response:
        verifier: TokenVerifier | None = request.app.state.verifier
        if verifier is not None:
            try:
                await check(
                    rule,
                    verifier,
                    request.headers.get("authorization"),
                    users_pb2.GetUserRequest(id=user_id),
                )
            except SessionCheckUnavailable:
                return JSONResponse({"title": "Service Unavailable"}, status_code=503)
            except AccessError as exc:
                status = 401 if isinstance(exc, Unauthenticated) else 403
                return JSONResponse({"title": exc.reason}, status_code=status)
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
    parser.add_argument("kind", choices=("floor", "monolith", "monolith_verify"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-file", type=Path, help="floor: the JSON to answer")
    parser.add_argument("--valkey-url", help="monolith: the users service's cache Valkey")
    parser.add_argument(
        "--sessions-url", help="monolith_verify: the Valkey of the sessions (default: --valkey-url)"
    )
    parser.add_argument("--key-prefix", default=DEFAULT_KEY_PREFIX)
    parser.add_argument("--auth-target", help="monolith_verify: the auth service (for the JWKS)")
    args = parser.parse_args(argv)
    app: Any
    if args.kind == "floor":
        if args.body_file is None:
            parser.error("floor needs --body-file")
        app = floor_app(args.body_file.read_bytes())
    else:
        if args.valkey_url is None:
            parser.error(f"{args.kind} needs --valkey-url")
        if args.kind == "monolith_verify" and not args.auth_target:
            parser.error("monolith_verify needs --auth-target")
        auth_target = args.auth_target if args.kind == "monolith_verify" else None
        app = monolith_app(
            args.valkey_url,
            args.key_prefix,
            auth_target=auth_target,
            sessions_url=args.sessions_url or args.valkey_url,
        )
    # As portico_gateway.__main__ configures uvicorn: the monolith logs each request at INFO as
    # the gateway does; the floor is the minimum, without logging.
    level = "warning" if args.kind == "floor" else "info"
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level=level, server_header=False)


if __name__ == "__main__":
    main()
