"""``/openapi.json`` and ``/docs`` (Swagger UI): open in dev, admins only in production.

The OpenAPI document declares the OAuth2 password flow (``tokenUrl`` ``/v1/auth/token``), so
Swagger UI's "Authorize" button logs in with an email and password and sends the access token
with every "Try it out". In production (``GATEWAY_ENVIRONMENT=production``) both routes need an
admin access token in ``Authorization`` (the API's shape is no secret, but there is no reason to
hand it to anonymous scanners): 401 without a valid token, 403 for a non-admin.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from portico_gateway.errors import RequestError
from portico_gateway.middleware.authentication import authenticated

OPENAPI_URL = "/openapi.json"
DOCS_URL = "/docs"


def _require_admin(request: Request) -> None:
    principal = authenticated(request.scope)  # 401 (with WWW-Authenticate) without a token
    if not principal.is_admin:
        raise RequestError(
            403, "the API documentation is for admins in production", kind="permission-denied"
        )


def make_router(*, production: bool, title: str) -> APIRouter:
    router = APIRouter(include_in_schema=False)

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
            swagger_ui_parameters={"persistAuthorization": False, "tryItOutEnabled": True},
        )

    return router
