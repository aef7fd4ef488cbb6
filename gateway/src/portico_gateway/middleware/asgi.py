"""Raw ASGI helpers every middleware shares (no Starlette ``Headers``/``Request`` per request).

Every request passes through all of the gateway's middleware, so they read the raw ASGI header
list (:func:`header`) instead of building a Starlette ``Headers`` object each, and add response
headers to the raw list (:func:`response_headers`).
"""

from __future__ import annotations

from starlette.types import Message, Scope


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


async def no_body() -> Message:
    """The ``receive`` of a response sent without reading the request: a disconnect."""
    return {"type": "http.disconnect"}
