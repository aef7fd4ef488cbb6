"""The OpenAPI document's security, and the token endpoint as Swagger UI's "Authorize" calls it.

What Swagger UI 5 (the one FastAPI's ``get_swagger_ui_html`` loads) sends for the OAuth2
password flow, read from swagger-ui-dist 5.35's ``authorizePassword``/``authorizeRequest``:
``POST <tokenUrl>`` with ``Content-Type: application/x-www-form-urlencoded``,
``Accept: application/json, text/plain, */*`` and ``X-Requested-With: XMLHttpRequest``; the
body is ``grant_type=password&username=…&password=…`` (``scope`` only when scopes were chosen:
empty values are left out). The dialog's "Client credentials location" decides where
``client_id``/``client_secret`` go: "Authorization header" (the default) sends
``Authorization: Basic base64(client_id:client_secret)`` even when both are empty
(``Basic Og==``); "Request body" adds ``client_id=…`` (and ``client_secret=…``) to the form
when filled in. Then every "Try it out" sends ``Authorization: Bearer <access_token>``.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.support.security import PASSWORD, People

SCHEME = "OAuth2"
#: Operations that need an access token, and those that do not: by hand, from the protos.
PROTECTED = {
    ("post", "/v1/users"),
    ("get", "/v1/users"),
    ("get", "/v1/users/me"),
    ("get", "/v1/users/{id}"),
    ("patch", "/v1/users/{id}"),
    ("delete", "/v1/users/{id}"),
    ("get", "/v1/audit/events"),
    ("get", "/v1/auth/users/{user_id}/sessions"),
    ("delete", "/v1/auth/users/{user_id}/sessions"),
}
PUBLIC = {
    ("post", "/v1/auth/signup"),
    ("post", "/v1/auth/token"),
    ("post", "/v1/auth/refresh"),
    ("post", "/v1/auth/logout"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/healthz"),
    ("get", "/readyz"),
}
URI_COMPONENT_SAFE = "!~*'()"  # what JavaScript's encodeURIComponent leaves as it is
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SWAGGER_HEADERS = {
    "Accept": "application/json, text/plain, */*",
    "Content-Type": "application/x-www-form-urlencoded",
    "X-Requested-With": "XMLHttpRequest",
}


def basic(client_id: str, client_secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()


async def test_the_document_declares_the_password_flow_and_who_needs_it(
    api: httpx.AsyncClient,
) -> None:
    document: dict[str, Any] = (await api.get("/openapi.json")).json()

    scheme = document["components"]["securitySchemes"][SCHEME]
    assert scheme["type"] == "oauth2"
    password = scheme["flows"]["password"]
    assert password["tokenUrl"] == "/v1/auth/token"
    assert password["scopes"] == {}  # required by OpenAPI 3.x's OAuth Flow Object, may be empty

    operations = {
        (verb, path): operation
        for path, item in document["paths"].items()
        for verb, operation in item.items()
        if verb in ("get", "put", "post", "delete", "patch")
    }
    assert set(operations) == PROTECTED | PUBLIC  # a new route must be classified here
    for key in PROTECTED:
        assert operations[key]["security"] == [{SCHEME: []}], key
    for key in PUBLIC:
        assert "security" not in operations[key], key


def swagger_form(fields: dict[str, str]) -> str:
    """A form body as Swagger UI's ``buildFormData`` writes it: empty values left out."""
    return "&".join(
        f"{name}={quote(value, safe=URI_COMPONENT_SAFE).replace('%20', '+')}"
        for name, value in fields.items()
        if value != ""
    )


SWAGGER_AUTHORIZE = [
    # (what the form gets besides grant_type/username/password, extra headers), named after
    # the dialog's "Client credentials location" and whether client_id was filled in
    pytest.param("", {"Authorization": basic("", "")}, id="header-location-no-client-id"),
    pytest.param("", {"Authorization": basic("swagger-ui", "")}, id="header-location-client-id"),
    pytest.param("", {}, id="body-location-no-client-id"),
    pytest.param(
        "&client_id=swagger-ui",
        {},
        id="body-location-client-id",
    ),
    # Not Swagger UI (it leaves empty values out), but what form-posting clients often send.
    pytest.param("&scope=", {}, id="empty-scope-field"),
]


@pytest.mark.parametrize(("extra_body", "extra_headers"), SWAGGER_AUTHORIZE)
async def test_the_token_endpoint_takes_what_swagger_ui_sends(
    api: httpx.AsyncClient,
    people: People,
    extra_body: str,
    extra_headers: dict[str, str],
) -> None:
    form = {"grant_type": "password", "username": people.self.email, "password": PASSWORD}
    response = await api.post(
        "/v1/auth/token",
        content=swagger_form(form) + extra_body,
        headers=SWAGGER_HEADERS | extra_headers,
    )
    assert response.status_code == 200, response.text
    grant = response.json()
    assert grant["token_type"] == "Bearer"

    tried = await api.get(  # "Try it out" once authorized
        "/v1/users/me", headers={"Authorization": f"Bearer {grant['access_token']}"}
    )
    assert tried.status_code == 200, tried.text
    assert tried.json()["id"] == people.self.user_id


async def test_the_advertised_refresh_url_takes_an_oauth2_refresh_request(
    api: httpx.AsyncClient, people: People
) -> None:
    form = {"grant_type": "refresh_token", "refresh_token": people.self.refresh_token}
    response = await api.post("/v1/auth/refresh", content=swagger_form(form), headers=FORM)
    assert response.status_code == 200, response.text
