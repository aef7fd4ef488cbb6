"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task and a copy per request).

Every request passes through all of the gateway's middleware, so they read the raw ASGI header
list (:func:`header`) instead of building a Starlette ``Headers`` object each, and add response
headers to the raw list (:func:`response_headers`).

* :class:`RequestIdMiddleware`: keeps a sane ``X-Request-ID`` or makes one, stores it in the
  scope (``scope["state"]["request_id"]``) for handlers and upstream metadata, and in the
  logging ContextVar, echoes it.
* :class:`BodyLimitMiddleware`: refuses bodies over the limit with 413 — at once when
  ``Content-Length`` says so, and mid-stream for chunked bodies (:class:`BodyTooLarge`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portico_common.logs import REQUEST_ID

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")
_SANE_ID = re.compile(r"[\x21-\x7e]{1,128}")  # visible ASCII, no spaces, at most 128
_DIGITS = re.compile(r"[0-9]{1,20}")  # str.isdigit() also takes "²", which int() refuses


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of the request header ``name`` (lowercase), as ``Headers.get`` gives it.

    ASGI servers send header names lowercased; like Starlette, this compares them as sent.
    """
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def response_headers(message: Message) -> list[tuple[bytes, bytes]]:
    """The raw header list of an ``http.response.start`` message, made a list of its own.

    Like Starlette's ``MutableHeaders(scope=message)``, it copies the list first: a response
    object's own header list is never changed.
    """
    raw: list[tuple[bytes, bytes]] = list(message.get("headers", ()))
    message["headers"] = raw
    return raw


def request_id_of(scope: MutableMapping[str, Any]) -> str:
    """The request id of this request (set by :class:`RequestIdMiddleware`)."""
    state = scope.setdefault("state", {})
    rid = state.get("request_id")
    if not isinstance(rid, str):
        rid = state["request_id"] = uuid.uuid4().hex
    return rid


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = header(scope, _REQUEST_ID_KEY)
        rid = given if given is not None and _SANE_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        token = REQUEST_ID.set(rid)  # every log line of this request carries it
        echoed = (_REQUEST_ID_KEY, rid.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = response_headers(message)
                if not any(key == _REQUEST_ID_KEY for key, _ in raw):
                    raw.append(echoed)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


class BodyTooLarge(Exception):  # noqa: N818 (an HTTP condition, named after 413)
    """The request body exceeded the configured limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = header(scope, b"content-length")
        if length is not None:
            valid = _DIGITS.fullmatch(length) is not None
            if not valid or int(length) > self.max_bytes:
                await self._refuse(scope, send, bad_length=not valid)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, scope: Scope, send: Send, *, bad_length: bool) -> None:
        # Imported here: errors.py imports this module for the request id.
        from starlette.requests import Request

        from portico_gateway.errors import problem

        request = Request(scope)
        if bad_length:
            response = problem(request, status=400, detail="malformed Content-Length header")
        else:
            detail = f"request body exceeds {self.max_bytes} bytes"
            response = problem(request, status=413, detail=detail)
        await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}
