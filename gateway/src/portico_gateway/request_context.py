"""What the gateway keeps for a request in its ASGI scope, read by middleware, routes and errors.

``scope["state"]["request_id"]``: the request's id, set by
:class:`~portico_gateway.middleware.request_id.RequestIdMiddleware` (the client's sane
``X-Request-ID``, or a new one) and read by the access log, the upstream calls' metadata and the
problem+json answers.
"""

from __future__ import annotations

import uuid
from collections.abc import MutableMapping
from typing import Any

REQUEST_ID_HEADER = "X-Request-ID"


def request_id_of(scope: MutableMapping[str, Any]) -> str:
    """The request id of this request (set by the request-id middleware)."""
    state = scope.setdefault("state", {})
    rid = state.get("request_id")
    if not isinstance(rid, str):
        rid = state["request_id"] = uuid.uuid4().hex
    return rid
