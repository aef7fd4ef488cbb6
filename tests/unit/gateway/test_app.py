"""The gateway's HTTP contract, driven through a real gRPC upstream with canned answers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2

from portico_gateway.errors import GRPC_TO_HTTP
from portico_gateway.lifespan import upstream_metadata
from tests.support.asgi import asgi_client
from tests.unit.gateway.conftest import ADMIN, Upstream, gateway_app, settings_for

PROBLEM = "application/problem+json"
CODES = [c for c in GRPC_TO_HTTP if c.name not in ("OK", "INVALID_ARGUMENT")]


def _is_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    assert {"type", "title", "detail", "instance"} <= body.keys()
    return body


async def test_create_answers_201_with_location_and_etag(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/users", json={"email": "a@example.com", "display_name": "A"})
    assert response.status_code == 201
    user = response.json()
    assert response.headers["location"] == f"/v1/users/{user['id']}"
    assert response.headers["etag"] == '"e1"'
    assert user["display_name"] == "A"


@pytest.mark.parametrize("code", CODES, ids=lambda c: c.name)
async def test_grpc_codes_map_to_http_statuses(http: httpx.AsyncClient, code: object) -> None:
    name = code.name  # type: ignore[attr-defined]
    response = await http.post(
        "/v1/users", json={"email": f"code-{name}@example.com", "display_name": "A"}
    )
    status = GRPC_TO_HTTP[code]  # type: ignore[index]
    body = _is_problem(response, status)
    if status >= 500:  # upstream internals never reach the client
        assert "SELECT" not in response.text
    if GRPC_TO_HTTP[code] == 503:  # type: ignore[index]
        assert response.headers["retry-after"] == "1"
    # An upstream CANCELLED is a stopping server's (the gateway cancels nothing it answers).
    kind = "unavailable" if name == "CANCELLED" else name.lower().replace("_", "-")
    assert body["type"] == f"https://portico.dev/problems/{kind}"


async def test_bad_request_details_become_field_errors(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/users", json={"email": "code-INVALID_ARGUMENT@x.io", "display_name": "A"}
    )
    body = _is_problem(response, 400)
    assert body["errors"] == [{"field": "email", "message": "must be a valid email address"}]


async def test_etag_mismatch_is_412(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/users", json={"email": "code-ETAG@x.io", "display_name": "A"})
    _is_problem(response, 412)


async def test_patch_derives_the_mask_and_passes_if_match(http: httpx.AsyncClient) -> None:
    response = await http.patch(
        "/v1/users/7", json={"email": "b@example.com"}, headers={"If-Match": '"v9"'}
    )
    assert response.status_code == 200
    assert response.json()["display_name"] == "email"
    assert response.json()["etag"] == "v9"
    explicit = await http.patch(
        "/v1/users/7?update_mask=displayName", json={"email": "b@example.com"}
    )
    assert explicit.json()["display_name"] == "display_name"
    assert explicit.json()["etag"] == "none"


async def test_delete_answers_204_without_body(http: httpx.AsyncClient) -> None:
    response = await http.delete("/v1/users/7")
    assert response.status_code == 204
    assert response.content == b""


async def test_list_reads_query_parameters(http: httpx.AsyncClient) -> None:
    assert (await http.get("/v1/users")).json() == {"users": [], "next_page_token": "unset|"}
    page = await http.get("/v1/users", params={"page_size": "5", "page_token": "t"})
    assert page.json()["next_page_token"] == "5|t"
    body = _is_problem(await http.get("/v1/users", params={"sort": "x"}), 400)
    assert body["errors"] == [{"field": "sort", "message": "unknown field"}]


async def test_request_id_is_kept_echoed_and_sent_upstream(
    http: httpx.AsyncClient, upstream: Upstream
) -> None:
    response = await http.get("/v1/users/42", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert upstream.servicer.seen_metadata[-1]["x-request-id"] == "abc-123"
    odd = await http.get("/v1/users/42", headers={"X-Request-ID": "has spaces"})
    assert odd.headers["x-request-id"] != "has spaces"
    assert len(odd.headers["x-request-id"]) == 32


async def test_client_timeout_shortens_the_deadline(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/users/slow", headers={"Request-Timeout": "0.2"})
    _is_problem(response, 504)
    response = await http.get("/v1/users/slow", headers={"grpc-timeout": "150m"})
    _is_problem(response, 504)
    _is_problem(await http.get("/v1/users/1", headers={"grpc-timeout": "soon"}), 400)


async def test_oversized_bodies_are_413(http: httpx.AsyncClient) -> None:
    big = {"email": "a@example.com", "display_name": "x" * 4096}
    _is_problem(await http.post("/v1/users", json=big), 413)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"email": "a@example.com", "display_name": "'
        for _ in range(10):
            yield b"x" * 512
        yield b'"}'

    response = await http.post(
        "/v1/users", content=chunks(), headers={"Content-Type": "application/json"}
    )
    _is_problem(response, 413)


async def test_body_problems(http: httpx.AsyncClient) -> None:
    _is_problem(
        await http.post("/v1/users", content=b"email=a", headers={"Content-Type": "text/plain"}),
        415,
    )
    _is_problem(
        await http.post(
            "/v1/users", content=b'{"email": ', headers={"Content-Type": "application/json"}
        ),
        400,
    )
    body = _is_problem(
        await http.post("/v1/users", json={"email": "a@b.io", "display_name": "A", "x": 1}), 400
    )
    assert body["errors"] == [{"field": "x", "message": "unknown field"}]


FORM = "application/x-www-form-urlencoded"


async def test_forms_are_taken_exactly_where_the_document_offers_them(
    http: httpx.AsyncClient,
) -> None:
    """Each route with a body: a form is 415 unless the document offers one, JSON never is.

    The document offers a form on the OAuth2 token and refresh routes only (RFC 6749 requests);
    elsewhere a form was once accepted too, undocumented, and generated clients need one
    encoding per body.
    """
    spec = (await http.get("/openapi.json")).json()
    offered: dict[tuple[str, str], set[str]] = {
        (verb, path): set(operation["requestBody"]["content"])
        for path, item in spec["paths"].items()
        for verb, operation in item.items()
        if "requestBody" in operation
    }
    assert {k for k, media in offered.items() if FORM in media} == {
        ("post", "/v1/auth/token"),
        ("post", "/v1/auth/refresh"),
    }
    for (verb, path), media in offered.items():
        url = path.replace("{id}", "6f1c1d2e-8f9a-4b7c-9d0e-1f2a3b4c5d6e")
        form = await http.request(
            verb, url, content=b"display_name=F", headers={"Content-Type": FORM}
        )
        assert (form.status_code == 415) == (FORM not in media), (verb, path, form.text)
        as_json = await http.request(verb, url, json={"display_name": "F"})
        assert as_json.status_code != 415, (verb, path, as_json.text)
        missing = await http.request(verb, url)  # every documented body is required: a 400
        assert missing.status_code == 400, (verb, path, missing.text)
        assert "body is missing" in missing.json()["detail"]


async def test_the_token_route_reads_its_form(http: httpx.AsyncClient) -> None:
    form = {"grant_type": "password", "username": "a@example.com", "password": "p"}
    response = await http.post("/v1/auth/token", data=form)
    # read and sent on: the fake upstream serves no AuthService
    _is_problem(response, GRPC_TO_HTTP[grpc.StatusCode.UNIMPLEMENTED])
    created = await http.post("/v1/users", data={"email": "f@example.com", "display_name": "F"})
    _is_problem(created, 415)  # JSON only: {"email": ..., "display_name": ...}


async def test_unknown_routes_and_methods_are_problems(http: httpx.AsyncClient) -> None:
    _is_problem(await http.get("/nope"), 404)
    _is_problem(await http.get("/v1/users/"), 404)  # no redirect to /v1/users
    response = await http.put("/v1/users/1", json={})
    _is_problem(response, 405)
    assert response.headers["allow"] == "DELETE, GET, PATCH"


async def test_malformed_content_length_is_400() -> None:
    """Only ASCII digits: ``"²".isdigit()`` is true in Python, yet it is no length."""
    app = gateway_app(settings_for("127.0.0.1:1"))
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/users",
        "raw_path": b"/v1/users",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-length", "²".encode("latin-1"))],
        "server": ("gateway", 80),
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 400


async def test_health_and_readiness(http: httpx.AsyncClient, upstream: Upstream) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.json() == {
        "status": "ready",
        "upstreams": {"users": "SERVING", "auth": "SERVING", "audit": "SERVING"},
    }
    await upstream.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    body = _is_problem(await http.get("/readyz"), 503)
    assert body["detail"] == (
        "not ready: users is NOT_SERVING, auth is NOT_SERVING, audit is NOT_SERVING"
    )


async def test_readiness_fails_when_the_upstream_is_down() -> None:
    app = gateway_app(settings_for("127.0.0.1:1", readiness_timeout_s=0.3, retry_after_s=7))
    async with asgi_client(app, headers=ADMIN) as client:
        not_ready = await client.get("/readyz")
        body = _is_problem(not_ready, 503)
        assert "users is" in str(body["detail"])
        assert not_ready.headers["retry-after"] == "7"
        down = await client.get("/v1/users/1")
        _is_problem(down, 503)
        assert down.headers["retry-after"] == "7"


async def test_openapi_documents_the_proto_routes(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    paths = spec["paths"]
    assert set(paths["/v1/users"]) == {"get", "post"}
    assert set(paths["/v1/users/{id}"]) == {"get", "patch", "delete"}
    create = paths["/v1/users"]["post"]
    assert create["summary"] == "Create a user"
    assert "case-insensitively" in create["description"]
    assert set(create["responses"]) >= {"201", "400", "409", "413", "415", "503"}
    assert create["requestBody"]["content"] == {
        "application/json": {"schema": {"$ref": "#/components/schemas/CreateUserRequest"}}
    }
    assert create["operationId"] == "createUser"
    assert create["tags"] == ["users"]
    listing = paths["/v1/users"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"page_size", "page_token"}
    assert "412" in paths["/v1/users/{id}"]["patch"]["responses"]
    assert "204" in paths["/v1/users/{id}"]["delete"]["responses"]
    schemas = spec["components"]["schemas"]
    assert {"User", "UserUpdatePatch", "ListUsersResponse", "Problem"} <= set(schemas)
    assert not [name for name in schemas if "." in name]  # no proto packages in client names
    assert [t["name"] for t in spec["tags"]] == ["users", "auth", "audit", "health"]
    assert (await http.get("/docs")).status_code == 200


async def test_caller_token_and_address_are_forwarded(
    http: httpx.AsyncClient, upstream: Upstream
) -> None:
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Portico-Canary": "always"}
    assert (await http.get("/v1/users/42", headers=headers)).status_code == 200
    seen = upstream.servicer.seen_metadata[-1]
    assert seen["x-portico-canary"] == "always"  # the mesh keeps the call on the canaries
    assert seen["authorization"] == ADMIN["Authorization"]  # the services check it again
    assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"


async def test_the_forwarder_key_goes_to_the_auth_service_alone(upstream: Upstream) -> None:
    """The key proves the gateway to auth (``upstream_metadata``); users never sees it."""
    key = "the-gateways-forwarder-key-0123456789abcdef"
    settings = settings_for(upstream.target, forwarder_key=key)
    assert upstream_metadata("auth", settings) == (("x-portico-forwarder", key),)
    assert upstream_metadata("auth", settings_for(upstream.target)) == ()  # no key: none sent
    async with asgi_client(gateway_app(settings), headers=ADMIN) as http:
        assert (await http.get("/v1/users/42")).status_code == 200
    seen = upstream.servicer.seen_metadata[-1]
    assert "x-portico-forwarder" not in seen
    assert key not in seen.values()


async def test_a_literal_path_is_not_served_by_a_variable_route(http: httpx.AsyncClient) -> None:
    """``/v1/users/me`` (GetCurrentUser) is GET only: PATCH there is 405, not UpdateUser("me")."""
    assert (await http.get("/v1/users/me")).json()["id"] == "me"
    for method in ("PATCH", "DELETE"):
        response = await http.request(method, "/v1/users/me", json={"display_name": "x"})
        _is_problem(response, 405)
        assert response.headers["allow"] == "GET"
    response = await http.put("/v1/users/42", json={})
    assert response.headers["allow"] == "DELETE, GET, PATCH"  # variable routes unaffected
