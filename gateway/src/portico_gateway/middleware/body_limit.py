"""Request bodies over the limit are refused with 413: at once when ``Content-Length`` says so,
and mid-stream for chunked bodies (:class:`~portico_gateway.errors.BodyTooLarge`, answered by
the error handlers); a malformed ``Content-Length`` is a 400.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portico_gateway.errors import BodyTooLarge, problem
from portico_gateway.middleware.asgi import header, no_body

_DIGITS = re.compile(r"[0-9]{1,20}")  # str.isdigit() also takes "²", which int() refuses


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
        request = Request(scope)
        if bad_length:
            response = problem(request, status=400, detail="malformed Content-Length header")
        else:
            detail = f"request body exceeds {self.max_bytes} bytes"
            response = problem(request, status=413, detail=detail)
        await response(scope, no_body, send)
