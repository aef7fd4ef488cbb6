"""Browser-facing hardening: security headers on every response, and the CORS configuration.

:class:`SecurityHeadersMiddleware` (pure ASGI) adds, unless the response already has them:

* ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy:
  no-referrer``, ``Cross-Origin-Opener-Policy: same-origin``;
* ``Cache-Control: no-store`` on every answer to a method other than GET/HEAD, and on every
  ``/v1/auth/`` answer (tokens must never sit in a cache: there it replaces any other value);
* ``Content-Security-Policy``: :data:`API_CSP` (``default-src 'none'; frame-ancestors 'none'``:
  JSON needs nothing) — except for the Swagger UI HTML under ``/docs``, which loads its
  bundle, stylesheet and icon from the gateway itself (``/docs/assets``,
  :mod:`portico_gateway.routers.docs`), fetches ``/openapi.json`` and boots from an inline
  ``<script>`` (FastAPI's ``get_swagger_ui_html``). No other host is allowed. Rather than
  ``'unsafe-inline'``, that page's inline scripts are hashed (``'sha256-…'``) as they are
  served, so only FastAPI's own bootstrap runs; styles keep ``'unsafe-inline'`` (Swagger UI
  sets inline styles; no script can come from them); images are the gateway's and ``data:``
  URIs (the stylesheet's icons);
* ``Strict-Transport-Security: max-age=…; includeSubDomains`` only when ``hsts_max_age_s`` > 0
  (the mesh ingress terminates TLS; in dev there is none).

:func:`cors_options` turns ``GATEWAY_CORS_ALLOW_ORIGINS`` into the keyword arguments of
Starlette's ``CORSMiddleware`` (None when empty: then no CORS middleware at all). Origins are
exact; ``*`` is refused by the settings because requests carry ``Authorization``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portico_gateway.config import GatewaySettings
from portico_gateway.middleware.asgi import response_headers

API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = (
    "default-src 'none'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
AUTH_PREFIX = "/v1/auth/"
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>", re.DOTALL | re.I)

CORS_METHODS = ("GET", "POST", "PATCH", "DELETE", "OPTIONS")
CORS_REQUEST_HEADERS = (
    "Authorization", "Content-Type", "Idempotency-Key", "If-Match", "X-Request-ID",
)  # fmt: skip
CORS_EXPOSED_HEADERS = (
    "ETag", "Location", "Retry-After", "RateLimit", "RateLimit-Policy", "X-Request-ID",
    "Idempotent-Replayed",
)  # fmt: skip


def docs_csp(html: bytes) -> str:
    """The CSP for a docs page: the gateway itself plus the hash of each inline script."""
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return DOCS_CSP.format(hashes=hashes)


class SecurityHeadersMiddleware:
    """Adds the headers listed in the module doc to every HTTP response."""

    def __init__(self, app: ASGIApp, *, hsts_max_age_s: int = 0, docs_path: str = "/docs") -> None:
        self.app = app
        self.docs_path = docs_path
        fixed = {
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cross-Origin-Opener-Policy": "same-origin",
        }
        if hsts_max_age_s > 0:
            fixed["Strict-Transport-Security"] = f"max-age={hsts_max_age_s}; includeSubDomains"
        self.fixed = fixed
        self._fixed_raw = [
            (n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in fixed.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        auth = path.startswith(AUTH_PREFIX)
        no_store = auth or scope["method"] not in ("GET", "HEAD")
        docs = path == self.docs_path or path.startswith(self.docs_path + "/")
        if not (auth or docs):  # the API's answers: add what is missing, in one pass
            await self.app(scope, receive, self._api_sender(send, no_store=no_store))
            return
        held: Message | None = None  # a docs page's start, sent once its body is known
        body: list[bytes] = []

        async def send_with_headers(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.fixed.items():
                    headers.setdefault(name, value)
                if auth:
                    headers["Cache-Control"] = "no-store"
                elif no_store:
                    headers.setdefault("Cache-Control", "no-store")
                if docs and headers.get("content-type", "").startswith("text/html"):
                    held = message
                    return
                headers.setdefault("Content-Security-Policy", API_CSP)
            elif message["type"] == "http.response.body" and held is not None:
                body.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                html = b"".join(body)
                MutableHeaders(scope=held).setdefault("Content-Security-Policy", docs_csp(html))
                await send(held)
                message = {"type": "http.response.body", "body": html, "more_body": False}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _api_sender(self, send: Send, *, no_store: bool) -> Send:
        """``send`` adding the fixed headers, ``Cache-Control`` and the API's CSP if absent.

        The same headers, in the same order, as ``MutableHeaders.setdefault`` one by one.
        """
        fixed = self._fixed_raw

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = response_headers(message)
                present = {key for key, _ in raw}
                raw.extend(pair for pair in fixed if pair[0] not in present)
                if no_store and _CACHE_CONTROL[0] not in present:
                    raw.append(_CACHE_CONTROL)
                if _API_CSP[0] not in present:
                    raw.append(_API_CSP)
            await send(message)

        return send_with_headers


_CACHE_CONTROL = (b"cache-control", b"no-store")
_API_CSP = (b"content-security-policy", API_CSP.encode("latin-1"))


def cors_options(settings: GatewaySettings) -> dict[str, Any] | None:
    """Keyword arguments of Starlette's ``CORSMiddleware``, or None when CORS is off."""
    if not settings.cors_allow_origins:
        return None
    return {
        "allow_origins": list(settings.cors_allow_origins),
        "allow_methods": list(CORS_METHODS),
        "allow_headers": list(CORS_REQUEST_HEADERS),
        "expose_headers": list(CORS_EXPOSED_HEADERS),
        "allow_credentials": True,
        "max_age": 600,
    }
