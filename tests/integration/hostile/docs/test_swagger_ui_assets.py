"""The API docs page runs only the gateway's own, version-locked Swagger UI (issue 14, item 11).

``/docs`` loaded Swagger UI's bundle and stylesheet from a public CDN at a floating major
version (``swagger-ui-dist@5``) without integrity checks: whoever controlled that CDN path ran
script in the docs page's origin, next to the tokens of "Authorize". Now the page names no other
host, its files come from the gateway (``/docs/assets``, the locked ``fastapi-offline`` wheel),
and its Content-Security-Policy allows scripts, styles and images from the gateway alone (plus
the hash of FastAPI's inline bootstrap), in dev and in production alike.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import metadata

import httpx
import pytest

from portico_auth.server import RunningServer as AuthServer
from portico_users.server import RunningServer as UsersServer
from tests.support.security import People, authorization, gateway

#: Any absolute or protocol-relative URL in the page.
EXTERNAL = re.compile(rb"""(?:src|href)\s*=\s*["'](?:[a-z][a-z0-9+.-]*:|//)""", re.I)
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")


def directives(response: httpx.Response) -> dict[str, str]:
    policy = response.headers["content-security-policy"]
    return dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())


def sha256(script: bytes) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"


async def test_the_docs_page_names_no_other_host(api: httpx.AsyncClient) -> None:
    page = await api.get("/docs")
    assert page.status_code == 200, page.text
    assert EXTERNAL.findall(page.content) == []
    assert b"cdn" not in page.content.lower()
    version = metadata.version("fastapi-offline")
    for name in ASSETS:
        assert f'"/docs/assets/{name}?v={version}"'.encode() in page.content, name


async def test_the_docs_csp_allows_the_gateway_alone(api: httpx.AsyncClient) -> None:
    page = await api.get("/docs")
    csp = directives(page)
    (bootstrap,) = re.findall(rb"<script>(.*?)</script>", page.content, re.DOTALL)
    assert csp == {
        "default-src": "'none'",
        "script-src": f"'self' {sha256(bootstrap)}",
        "style-src": "'self' 'unsafe-inline'",
        "img-src": "'self' data:",
        "connect-src": "'self'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }


@pytest.mark.parametrize("name", ASSETS)
async def test_the_assets_are_served_by_the_gateway(api: httpx.AsyncClient, name: str) -> None:
    version = metadata.version("fastapi-offline")
    served = await api.get(f"/docs/assets/{name}", params={"v": version})
    assert served.status_code == 200, served.text
    assert served.headers["x-content-type-options"] == "nosniff"
    expected = {"js": "text/javascript", "css": "text/css", "png": "image/png"}[name.split(".")[-1]]
    assert served.headers["content-type"].startswith(expected)
    assert len(served.content) > 1000
    if name.endswith(".js"):
        assert b"SwaggerUIBundle" in served.content


@pytest.mark.parametrize(
    "path", ["/docs/assets/redoc.standalone.js", "/docs/assets/..%2fcore.py", "/docs/assets/"]
)
async def test_nothing_else_of_the_package_is_served(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get(path)
    assert response.status_code == 404, response.text


async def test_production_docs_need_an_admin_but_their_assets_do_not(
    users_server: UsersServer, auth_server: AuthServer, valkey_url: str, people: People
) -> None:
    """The page stays admins-only in production; a browser fetches its files without a token."""
    async with gateway(
        users_port=users_server.port,
        auth_port=auth_server.port,
        valkey_url=valkey_url,
        environment="production",
    ) as api:
        assert (await api.get("/docs")).status_code == 401
        page = await api.get("/docs", headers=authorization(people.admin.access_token))
        assert page.status_code == 200, page.text
        assert EXTERNAL.findall(page.content) == []
        asset = await api.get("/docs/assets/swagger-ui-bundle.js")
        assert asset.status_code == 200
