"""``/openapi.json`` and ``/docs`` (Swagger UI): open in dev, admins only in production.

The OpenAPI document declares the OAuth2 password flow (``tokenUrl`` ``/v1/auth/token``), so
Swagger UI's "Authorize" button logs in with an email and password and sends the access token
with every "Try it out". In production (``GATEWAY_ENVIRONMENT=production``) both routes need an
admin access token in ``Authorization`` (the API's shape is no secret, but there is no reason to
hand it to anonymous scanners): 401 without a valid token, 403 for a non-admin.

Swagger UI's own files (its bundle, stylesheet and icon) come from the gateway, never from a
CDN: ``/docs/assets/<file>`` serves them from the ``fastapi-offline`` package, whose version
``uv.lock`` pins (with the hash of its wheel), so the browser runs exactly the reviewed files.
The URLs carry that version (``?v=…``) so a cached copy never outlives an upgrade. These files
are the public Swagger UI, the same for everyone: they are open in production too (a browser
fetches them without the page's token). The page's Content-Security-Policy
(:mod:`portico_gateway.middleware.security_headers`) allows scripts and styles from the gateway
alone.
"""

from __future__ import annotations

from importlib import metadata, resources
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from portico_gateway.errors import RequestError
from portico_gateway.middleware.authentication import authenticated

OPENAPI_URL = "/openapi.json"
DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"
#: The package that ships Swagger UI's files, and the files the page uses (nothing else is served).
ASSETS_PACKAGE = "fastapi-offline"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
#: Assets are versioned by URL (``?v=``): a browser may keep them for a day.
ASSETS_CACHE_CONTROL = "public, max-age=86400"


def assets_folder() -> Path:
    """Where the installed ``fastapi-offline`` keeps Swagger UI's files."""
    return Path(str(resources.files(fastapi_offline) / "static"))


def asset_url(name: str) -> str:
    """The gateway's URL of one of Swagger UI's files, with the package version."""
    return f"{ASSETS_URL}/{name}?v={metadata.version(ASSETS_PACKAGE)}"


def _require_admin(request: Request) -> None:
    principal = authenticated(request.scope)  # 401 (with WWW-Authenticate) without a token
    if not principal.is_admin:
        raise RequestError(
            403, "the API documentation is for admins in production", kind="permission-denied"
        )


def make_router(*, production: bool, title: str) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    folder = assets_folder()
    urls = {name: asset_url(name) for name in ASSETS}

    @router.get(OPENAPI_URL)
    async def openapi(request: Request) -> Any:
        if production:
            _require_admin(request)
        return JSONResponse(request.app.openapi())

    @router.get(DOCS_URL)
    async def docs(request: Request) -> HTMLResponse:
        if production:
            _require_admin(request)
        return get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title=f"{title} - Swagger UI",
            swagger_js_url=urls["swagger-ui-bundle.js"],
            swagger_css_url=urls["swagger-ui.css"],
            swagger_favicon_url=urls["favicon.png"],
            swagger_ui_parameters={"persistAuthorization": False, "tryItOutEnabled": True},
        )

    @router.get(ASSETS_URL + "/{name}")
    async def asset(name: str) -> FileResponse:
        media_type = ASSETS.get(name)
        if media_type is None:  # only the files the page uses; no paths, no listing
            raise RequestError(404, f"no route for GET {ASSETS_URL}/{name}")
        return FileResponse(
            folder / name,
            media_type=media_type,
            headers={"Cache-Control": ASSETS_CACHE_CONTROL},
        )

    return router
