"""What an ``Idempotency-Key`` may store: never a credential, never an unrouted request.

* Presenting a spent refresh token again with the same key used to replay the first answer,
  the *live* rotated refresh token, with ``Idempotent-Replayed: true``: reuse detection was
  bypassed and the session stayed alive, and token answers sat in Valkey in plaintext for the
  record TTL (issue 14, item 5). Answers whose message has ``debug_redact`` fields are now never
  stored: the retry runs, meets reuse detection, and the session ends.
* An anonymous POST with a key to a path that does not exist was stored and replayed (item 4):
  only requests that reach an upstream leave a record.
"""

from __future__ import annotations

from typing import Any

import httpx

from portico_gateway.middleware.idempotency import KEY_PREFIX
from tests.support.security import ADMIN_EMAIL, PASSWORD, People, authorization

LOGIN = {"grant_type": "password", "username": ADMIN_EMAIL, "password": PASSWORD}


async def records(valkey: Any) -> list[bytes]:
    return [key async for key in valkey.scan_iter(match=f"{KEY_PREFIX}*")]


async def test_a_spent_refresh_token_with_the_same_key_revokes_the_session(
    api: httpx.AsyncClient, people: People, valkey: Any
) -> None:
    key = {"Idempotency-Key": "refresh-once"}
    spent = {"refresh_token": people.admin.refresh_token}
    first = await api.post("/v1/auth/refresh", json=spent, headers=key)
    assert first.status_code == 200, first.text
    live = first.json()
    again = await api.post("/v1/auth/refresh", json=spent, headers=key)
    assert again.status_code == 401, again.text  # reuse detected, not a replay
    assert "idempotent-replayed" not in again.headers
    assert live["refresh_token"] not in again.text
    # the whole session ended: the rotated refresh token and its access token are dead too
    rotated = await api.post("/v1/auth/refresh", json={"refresh_token": live["refresh_token"]})
    assert rotated.status_code == 401, rotated.text
    me = await api.get("/v1/users/me", headers=authorization(live["access_token"]))
    assert me.status_code == 401, me.text
    assert await records(valkey) == []


async def test_a_login_with_a_key_is_never_stored_or_replayed(
    api: httpx.AsyncClient, people: People, valkey: Any
) -> None:
    key = {"Idempotency-Key": "login-once"}
    first = await api.post("/v1/auth/token", data=LOGIN, headers=key)
    again = await api.post("/v1/auth/token", data=LOGIN, headers=key)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert "idempotent-replayed" not in again.headers
    assert first.json()["access_token"] != again.json()["access_token"]
    assert await records(valkey) == []
    token = first.json()["access_token"].encode()
    async for name in valkey.scan_iter():  # no value anywhere holds the token
        if await valkey.type(name) == b"string":
            assert token not in (await valkey.get(name) or b""), name


async def test_an_unrouted_post_leaves_no_record(api: httpx.AsyncClient, valkey: Any) -> None:
    for path in ("/v1/nothing-here", "/v1/users"):  # unknown; and refused before the upstream
        key = {"Idempotency-Key": f"mint-{path}"}
        first = await api.post(path, json={"x": 1}, headers=key)
        again = await api.post(path, json={"x": 1}, headers=key)
        assert first.status_code in (401, 404), first.text
        assert again.status_code == first.status_code
        assert "idempotent-replayed" not in again.headers
    assert await records(valkey) == []


async def test_a_creating_call_is_still_replayed(
    api: httpx.AsyncClient, people: People, valkey: Any
) -> None:
    """The control: a routed answer without credentials is stored and replayed."""
    headers = authorization(people.admin.access_token) | {"Idempotency-Key": "create-once"}
    body = {"email": "made@example.com", "display_name": "Made"}
    first = await api.post("/v1/users", json=body, headers=headers)
    again = await api.post("/v1/users", json=body, headers=headers)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.headers["idempotent-replayed"] == "true"
    assert len(await records(valkey)) == 1
