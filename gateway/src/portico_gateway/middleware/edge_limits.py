"""Requests the edge refuses once their head is parsed: too many or too large headers (431), and
requests on a connection over the gateway's connection limit (503).

The connection itself (:mod:`portico_gateway.edge`) bounds the bytes of an incomplete head,
with an allowance for the request line, so nothing unbounded is ever buffered; here the parsed
headers are held to the exact bounds (``GATEWAY_MAX_HEADER_BYTES``, counted as on the wire:
name, ``": "``, value, CRLF; ``GATEWAY_MAX_HEADER_COUNT``), with a problem+json answer that
carries the request id and passes through the access log and the metrics like any other.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from portico_gateway.edge import OVER_CAPACITY
from portico_gateway.errors import problem
from portico_gateway.middleware.asgi import no_body

#: Bytes a header line adds to its name and value on the wire: ": " and CRLF.
_LINE_OVERHEAD = 4


class EdgeLimitsMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_header_bytes: int, max_header_count: int, retry_after_s: int
    ) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if OVER_CAPACITY in scope.get("extensions", {}):
            response = problem(
                Request(scope),
                status=503,
                detail="the gateway has too many open connections; retry later",
                headers={"Retry-After": str(self.retry_after_s), "Connection": "close"},
            )
            await response(scope, no_body, send)
            return
        headers = scope["headers"]
        detail = None
        if len(headers) > self.max_header_count:
            detail = f"the request has more than {self.max_header_count} headers"
        elif sum(len(k) + len(v) for k, v in headers) + _LINE_OVERHEAD * len(headers) > (
            self.max_header_bytes
        ):
            detail = f"the request's headers exceed {self.max_header_bytes} bytes"
        if detail is None:
            await self.app(scope, receive, send)
            return
        response = problem(Request(scope), status=431, detail=detail)
        await response(scope, no_body, send)
