"""Security headers on every answer, a CSP that lets Swagger UI run, and CORS from settings."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Response
from fastapi.middleware.cors import CORSMiddleware
from pydantic import ValidationError

from portico_gateway.config import GatewaySettings
from portico_gateway.middleware.security_headers import (
    API_CSP,
    CORS_EXPOSED_HEADERS,
    SecurityHeadersMiddleware,
    cors_options,
    docs_csp,
)
from tests.support.asgi import asgi_client
from tests.unit.gateway.conftest import Upstream, gateway_app, settings_for

APP_ORIGIN = "https://app.example.com"
FIXED = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


def small_app(**options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/things")
    async def things() -> dict[str, str]:
        return {"a": "b"}

    @app.post("/v1/things")
    async def create() -> Response:
        return Response(status_code=201, headers={"Cache-Control": "private"})

    @app.get("/v1/auth/jwks")
    async def jwks() -> Response:
        return Response(b"{}", headers={"Cache-Control": "max-age=60"})

    app.add_middleware(SecurityHeadersMiddleware, **options)
    return app


@pytest.fixture
async def gateway(upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(upstream.target, cors_allow_origins=[APP_ORIGIN])
    async with asgi_client(gateway_app(settings)) as client:
        yield client


def _sha256(script: bytes) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"


async def test_api_answers_carry_the_fixed_headers_and_a_deny_all_csp(
    gateway: httpx.AsyncClient,
) -> None:
    for response in (await gateway.get("/openapi.json"), await gateway.get("/v1/nowhere")):
        assert {k: response.headers.get(k) for k in FIXED} == FIXED
        assert response.headers["content-security-policy"] == API_CSP
        assert "strict-transport-security" not in response.headers  # off by default
        assert "cache-control" not in response.headers  # GET: cacheable unless it says not


async def test_writes_are_never_cached(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post("/v1/users", json={"email": "a@example.com"})
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"


async def test_the_docs_csp_admits_swagger_ui_and_nothing_else(
    gateway: httpx.AsyncClient,
) -> None:
    response = await gateway.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    directives = (d.split(" ", 1) for d in response.headers["content-security-policy"].split("; "))
    csp = dict(directives)
    inline = re.findall(rb"<script>(.*?)</script>", response.content, re.DOTALL)
    assert len(inline) == 1  # FastAPI's SwaggerUIBundle(...) bootstrap
    assert csp["script-src"] == f"'self' {_sha256(inline[0])}"
    assert "unsafe-inline" not in csp["script-src"]
    assert b'src="/docs/assets/swagger-ui-bundle.js?v=' in response.content
    assert csp["style-src"] == "'self' 'unsafe-inline'"
    assert csp["img-src"] == "'self' data:"
    assert csp["connect-src"] == "'self'"  # fetches /openapi.json and "try it out"
    assert csp["default-src"] == "'none'"
    assert csp["frame-ancestors"] == "'none'"
    assert response.headers["x-frame-options"] == "DENY"


def test_docs_csp_hashes_inline_scripts_only() -> None:
    html = b'<script src="/docs/assets/x.js"></script><script>run()</script>'
    csp = docs_csp(html)
    assert _sha256(b"run()") in csp
    assert csp.count("'sha256-") == 1


async def test_auth_answers_are_never_stored_and_hsts_follows_its_setting() -> None:
    async with asgi_client(small_app(hsts_max_age_s=31_536_000)) as client:
        jwks = await client.get("/v1/auth/jwks")
        created = await client.post("/v1/things")
        listed = await client.get("/v1/things")

    assert jwks.headers["cache-control"] == "no-store"  # replaces the handler's max-age
    assert created.headers["cache-control"] == "private"  # a write that says how to cache
    assert "cache-control" not in listed.headers
    for response in (jwks, created, listed):
        assert (
            response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
        )
        assert response.headers["content-security-policy"] == API_CSP


async def test_a_handler_s_own_security_headers_win_and_its_response_is_left_alone() -> None:
    app = FastAPI()
    shared = Response(
        b"{}",
        headers={"X-Frame-Options": "SAMEORIGIN", "Content-Security-Policy": "default-src 'self'"},
    )
    before = list(shared.raw_headers)

    @app.delete("/v1/things/1")
    async def delete() -> Response:
        return shared  # the same object for every request

    app.add_middleware(SecurityHeadersMiddleware)
    async with asgi_client(app) as client:
        answers = [await client.delete("/v1/things/1") for _ in range(2)]

    for response in answers:
        assert response.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
        assert response.headers["content-security-policy"] == "default-src 'self'"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert shared.raw_headers == before


async def test_cors_preflight_admits_a_configured_origin(gateway: httpx.AsyncClient) -> None:
    response = await gateway.options(
        "/v1/users",
        headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    allowed = response.headers["access-control-allow-headers"].lower()
    assert {"authorization", "idempotency-key", "if-match", "x-request-id"} <= {
        h.strip() for h in allowed.split(",")
    }
    assert "PATCH" in response.headers["access-control-allow-methods"]


async def test_cors_preflight_refuses_other_origins(gateway: httpx.AsyncClient) -> None:
    response = await gateway.options(
        "/v1/users",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


async def test_cors_answers_expose_the_gateway_headers(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/openapi.json", headers={"Origin": APP_ORIGIN})
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert exposed == {h.lower() for h in CORS_EXPOSED_HEADERS}


async def test_no_cors_middleware_without_origins(upstream: Upstream) -> None:
    assert cors_options(settings_for(upstream.target)) is None
    app = gateway_app(settings_for(upstream.target))
    classes: list[Any] = [m.cls for m in app.user_middleware]
    assert CORSMiddleware not in classes
    async with asgi_client(app) as client:
        response = await client.get("/openapi.json", headers={"Origin": APP_ORIGIN})
    assert "access-control-allow-origin" not in response.headers


def test_origins_come_from_a_json_list_or_a_comma_separated_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_CORS_ALLOW_ORIGINS", f"{APP_ORIGIN}, http://localhost:5173")
    assert GatewaySettings().cors_allow_origins == [APP_ORIGIN, "http://localhost:5173"]
    monkeypatch.setenv("GATEWAY_CORS_ALLOW_ORIGINS", f'["{APP_ORIGIN}"]')
    assert GatewaySettings().cors_allow_origins == [APP_ORIGIN]
    monkeypatch.setenv("GATEWAY_CORS_ALLOW_ORIGINS", "")
    assert GatewaySettings().cors_allow_origins == []


@pytest.mark.parametrize(
    "origins", [["*"], "*", [f"{APP_ORIGIN}/"], ["app.example.com"], [f"{APP_ORIGIN}/path"]]
)
def test_wildcard_and_non_origins_are_refused(origins: Any) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(cors_allow_origins=origins)
