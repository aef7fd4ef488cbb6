"""The users REST API end to end in-process: happy paths, bad input, concurrency."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

PROBLEM = "application/problem+json"


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def _fields(body: dict[str, Any]) -> set[str]:
    return {e["field"] for e in body.get("errors", [])}


async def _create(api: httpx.AsyncClient, email: str, name: str = "Ada") -> dict[str, Any]:
    response = await api.post("/v1/users", json={"email": email, "display_name": name})
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


async def test_rest_walk_create_get_list_patch_delete(api: httpx.AsyncClient) -> None:
    created = await api.post(
        "/v1/users", json={"email": "Ada@Example.com", "display_name": "Ada Lovelace"}
    )
    assert created.status_code == 201
    user = created.json()
    location = created.headers["location"]
    assert location == f"/v1/users/{user['id']}"
    assert user["email"] == "Ada@Example.com"

    got = await api.get(location)
    assert got.status_code == 200
    assert got.json() == user
    etag = got.headers["etag"]
    assert etag == f'"{user["etag"]}"'

    patched = await api.patch(
        location, json={"display_name": "Ada King"}, headers={"If-Match": etag}
    )
    assert patched.status_code == 200
    assert patched.json()["display_name"] == "Ada King"
    assert patched.json()["email"] == "Ada@Example.com"  # not in the body: unchanged
    assert patched.headers["etag"] != etag

    stale = await api.patch(location, json={"display_name": "Again"}, headers={"If-Match": etag})
    _problem(stale, 412)
    assert (await api.get(location)).json()["display_name"] == "Ada King"

    deleted = await api.delete(location, headers={"If-Match": patched.headers["etag"]})
    assert deleted.status_code == 204
    _problem(await api.get(location), 404)
    _problem(await api.delete(location), 404)


async def test_pages_walk_every_user_once(api: httpx.AsyncClient) -> None:
    emails = {f"user{i}@example.com" for i in range(7)}
    for email in sorted(emails):
        await _create(api, email)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = (await api.get("/v1/users", params={"page_size": 3, "page_token": token})).json()
        seen += [u["email"] for u in page["users"]]
        pages += 1
        token = page["next_page_token"]
        if not token:
            break
    assert sorted(seen) == sorted(emails)
    assert pages == 3
    default = (await api.get("/v1/users")).json()
    assert len(default["users"]) == 7
    assert default["next_page_token"] == ""


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"email": "not-an-email", "display_name": "A"}, {"email"}),
        ({"email": "a@example.com", "display_name": ""}, {"display_name"}),
        ({"email": "a@example.com", "display_name": "   "}, {"display_name"}),
        ({"email": "a@example.com", "display_name": "x" * 101}, {"display_name"}),
        ({"email": "a@example.com", "display_name": "A", "role": "admin"}, {"role"}),
        ({"email": 7, "display_name": "A"}, {"email"}),
    ],
)
async def test_bad_create_bodies_are_400_with_field_errors(
    api: httpx.AsyncClient, body: dict[str, Any], fields: set[str]
) -> None:
    assert _fields(_problem(await api.post("/v1/users", json=body), 400)) == fields
    assert (await api.get("/v1/users")).json()["users"] == []  # nothing stored


async def test_malformed_uuid_is_400(api: httpx.AsyncClient) -> None:
    for method in ("GET", "DELETE"):
        body = _problem(await api.request(method, "/v1/users/not-a-uuid"), 400)
        assert _fields(body) == {"id"}
    body = _problem(await api.patch("/v1/users/123", json={"display_name": "A"}), 400)
    assert _fields(body) == {"id"}


@pytest.mark.parametrize("size", ["0", "101", "-1", "ten"])
async def test_bad_page_sizes_are_400(api: httpx.AsyncClient, size: str) -> None:
    body = _problem(await api.get("/v1/users", params={"page_size": size}), 400)
    assert _fields(body) == {"page_size"}


async def test_bad_and_tampered_page_tokens_are_400(api: httpx.AsyncClient) -> None:
    for i in range(3):
        await _create(api, f"p{i}@example.com")
    token = (await api.get("/v1/users", params={"page_size": 1})).json()["next_page_token"]
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[len(raw) // 2] ^= 0x01
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    for bad in ("garbage!", tampered, "x" * 600):
        body = _problem(await api.get("/v1/users", params={"page_token": bad}), 400)
        assert _fields(body) == {"page_token"}


async def test_patch_bad_input(api: httpx.AsyncClient) -> None:
    user = await _create(api, "patch@example.com")
    path = f"/v1/users/{user['id']}"
    _problem(await api.patch(path, json={"display_name": "A"}, headers={"If-Match": '"nope"'}), 412)
    assert _fields(_problem(await api.patch(path, json={"email": "bad"}), 400)) == {"user.email"}
    _problem(await api.patch(path, json={}), 400)
    _problem(await api.patch(path, json={"display_name": "A", "etag": "x"}), 400)
    _problem(await api.patch(f"/v1/users/{uuid.uuid4()}", json={"display_name": "A"}), 404)


async def test_explicit_update_mask_limits_the_patch(api: httpx.AsyncClient) -> None:
    user = await _create(api, "mask@example.com")
    path = f"/v1/users/{user['id']}"
    body = {"display_name": "Masked", "email": "other@example.com"}
    for mask, name in (("display_name", "Masked"), ("displayName", "Masked")):
        patched = await api.patch(path, params={"update_mask": mask}, json=body)
        assert patched.status_code == 200, patched.text
        assert (patched.json()["display_name"], patched.json()["email"]) == (
            name,
            "mask@example.com",  # in the body but not in the mask: unchanged
        )
    unknown = await api.patch(path, params={"update_mask": "etag"}, json=body)
    _problem(unknown, 400)


async def test_duplicate_email_is_409_case_insensitively(api: httpx.AsyncClient) -> None:
    await _create(api, "dup@example.com")
    response = await api.post("/v1/users", json={"email": "DUP@example.com", "display_name": "B"})
    _problem(response, 409)


async def test_body_size_and_content_type(api: httpx.AsyncClient) -> None:
    big = {"email": "big@example.com", "display_name": "x" * 5000}
    _problem(await api.post("/v1/users", json=big), 413)
    response = await api.post(
        "/v1/users",
        content=b'{"email": "t@example.com", "display_name": "T"}',
        headers={"Content-Type": "text/plain"},
    )
    _problem(response, 415)
    assert (await api.get("/v1/users")).json()["users"] == []


async def test_parallel_creates_of_one_email_store_one_user(
    api: httpx.AsyncClient, database_url: str
) -> None:
    bodies = [
        {"email": f"Race{(i % 2 and 'R') or 'r'}@example.com", "display_name": f"N{i}"}
        for i in range(10)
    ]
    responses = await asyncio.gather(*(api.post("/v1/users", json=b) for b in bodies))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 9
    conn = await asyncpg.connect(database_url)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM users.users WHERE lower(email) = 'racer@example.com'"
        )
    finally:
        await conn.close()
    assert count == 1
