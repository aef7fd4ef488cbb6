"""``X-Request-ID``: keep a sane one or make one, for the logs, the upstream calls and the reply.

:class:`RequestIdMiddleware` keeps a sane ``X-Request-ID`` or makes one, stores it in the scope
(``scope["state"]["request_id"]``) for handlers and upstream metadata, and in the logging
ContextVar, and echoes it.
"""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portico_common.logs import REQUEST_ID
from portico_gateway.middleware.asgi import header, response_headers
from portico_gateway.request_context import REQUEST_ID_HEADER

_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")
_SANE_ID = re.compile(r"[\x21-\x7e]{1,128}")  # visible ASCII, no spaces, at most 128


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
