"""IdempotencyMiddleware over a real Valkey: replay, conflicts, concurrency, fail-closed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import valkey.asyncio as valkey_asyncio
from pydantic import SecretStr

from portico_gateway.app import create_app
from portico_gateway.config import GatewaySettings
from portico_gateway.middleware.idempotency import IdempotencyMiddleware, parse_key
from tests.support.asgi import asgi_client
from tests.support.middleware import (
    USER_HEADER,
    Calls,
    build_app,
    clients,
    closed_port_url,
)

PROBLEM = "application/problem+json"
JSON = {"Content-Type": "application/json"}


def idempotent(valkey_url: str, calls: Calls, **overrides: Any) -> Any:
    options = {"ttl_s": 60.0, "lock_ttl_s": 10.0, "wait_s": 2.0, "retry_after_s": 1} | overrides
    return build_app(valkey_url, [(IdempotencyMiddleware, options)], calls)


def keyed(key: str, **extra: str) -> dict[str, str]:
    return {"Idempotency-Key": key, **JSON, **extra}


async def test_a_retry_replays_the_stored_response_without_running_again(valkey_url: str) -> None:
    calls = Calls()
    async with clients(idempotent(valkey_url, calls)) as client:
        first = await client().post("/v1/things", content=b'{"a":1}', headers=keyed("k-1"))
        retry = await client().post("/v1/things", content=b'{"a":1}', headers=keyed("k-1"))

    assert calls.counts["create"] == 1
    assert first.status_code == retry.status_code == 201
    assert first.json() == retry.json() == {"number": 1, "echo": '{"a":1}'}  # body reached it
    assert "idempotent-replayed" not in first.headers
    assert retry.headers["idempotent-replayed"] == "true"
    for name in ("content-type", "location", "etag"):
        assert retry.headers[name] == first.headers[name]
    assert retry.headers["x-request-id"] != first.headers["x-request-id"]  # each answer's own


async def test_the_same_key_with_another_body_is_422(valkey_url: str) -> None:
    calls = Calls()
    async with clients(idempotent(valkey_url, calls)) as client:
        await client().post("/v1/things", content=b'{"a":1}', headers=keyed("k-2"))
        other_body = await client().post("/v1/things", content=b'{"a":2}', headers=keyed("k-2"))
        other_type = await client().post(
            "/v1/things", content=b'{"a":1}', headers=keyed("k-2", **{"Content-Type": "text/plain"})
        )

    for response in (other_body, other_type):
        assert response.status_code == 422
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"].endswith("/idempotency-key-reused")
    assert calls.counts["create"] == 1


async def test_keys_are_scoped_per_caller_and_per_path(valkey_url: str) -> None:
    calls = Calls()
    body = b"{}"
    async with clients(idempotent(valkey_url, calls)) as client:
        alice = await client().post(
            "/v1/things", content=body, headers=keyed("k", **{USER_HEADER: "a"})
        )
        bob = await client().post(
            "/v1/things", content=body, headers=keyed("k", **{USER_HEADER: "b"})
        )
        here = await client("192.0.2.10").post("/v1/things", content=body, headers=keyed("k"))
        there = await client("192.0.2.11").post("/v1/things", content=body, headers=keyed("k"))
        other_path = await client("192.0.2.10").post("/v1/slow", content=body, headers=keyed("k"))
        alice_again = await client("192.0.2.99").post(
            "/v1/things", content=body, headers=keyed("k", **{USER_HEADER: "a"})
        )

    assert [r.json()["number"] for r in (alice, bob, here, there)] == [1, 2, 3, 4]
    assert other_path.status_code == 201
    assert alice_again.headers["idempotent-replayed"] == "true"  # the user, from anywhere
    assert alice_again.json()["number"] == 1


async def test_concurrent_duplicates_run_once(valkey_url: str) -> None:
    calls = Calls()
    async with clients(idempotent(valkey_url, calls)) as client:
        one, two = await asyncio.gather(
            client().post("/v1/slow", content=b"{}", headers=keyed("k-c")),
            client().post("/v1/slow", content=b"{}", headers=keyed("k-c")),
        )

    assert calls.counts["slow"] == 1
    assert one.status_code == two.status_code == 201
    assert one.json() == two.json() == {"number": 1}
    replayed = [r.headers.get("idempotent-replayed") for r in (one, two)]
    assert sorted(replayed, key=str) == ["true", None] or sorted(replayed, key=str) == [
        None,
        "true",
    ]


async def test_a_duplicate_still_running_after_the_wait_is_409(valkey_url: str) -> None:
    calls = Calls()
    async with clients(idempotent(valkey_url, calls, wait_s=0.1)) as client:
        first = asyncio.create_task(client().post("/v1/slow", content=b"{}", headers=keyed("k-w")))
        await asyncio.sleep(0.05)
        duplicate = await client().post("/v1/slow", content=b"{}", headers=keyed("k-w"))
        assert (await first).status_code == 201

    assert duplicate.status_code == 409
    assert duplicate.headers["content-type"] == PROBLEM
    assert duplicate.headers["retry-after"] == "1"
    assert calls.counts["slow"] == 1


async def test_server_errors_are_not_stored_so_a_retry_runs_again(valkey_url: str) -> None:
    calls = Calls()
    async with clients(idempotent(valkey_url, calls)) as client:
        failed = await client().post("/v1/flaky", content=b"{}", headers=keyed("k-f"))
        retried = await client().post("/v1/flaky", content=b"{}", headers=keyed("k-f"))
        replayed = await client().post("/v1/flaky", content=b"{}", headers=keyed("k-f"))

    assert failed.status_code == 503
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    assert replayed.status_code == 201
    assert replayed.headers["idempotent-replayed"] == "true"
    assert calls.counts["flaky"] == 2


@pytest.mark.parametrize("key", ["", "has space", "é", "x" * 256])
async def test_a_malformed_key_is_400(valkey_url: str, key: str) -> None:
    calls = Calls()
    async with clients(idempotent(valkey_url, calls)) as client:
        headers = [(b"Idempotency-Key", key.encode()), (b"Content-Type", b"application/json")]
        response = await client().post("/v1/things", content=b"{}", headers=headers)

    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    assert "create" not in calls.counts


def test_keys_may_be_structured_field_strings() -> None:
    assert parse_key(['"abc-123"']) == parse_key(["abc-123"]) == "abc-123"
    assert parse_key(['"a\\"b"']) == 'a"b'
    assert parse_key(["x" * 255]) == "x" * 255
    assert parse_key(["a", "b"]) is None  # two keys: ambiguous


async def test_only_posts_with_the_header_are_affected(valkey_url: str) -> None:
    calls = Calls()
    async with clients(idempotent(valkey_url, calls)) as client:
        plain = [await client().post("/v1/things", content=b"{}", headers=JSON) for _ in range(2)]
        gets = [await client().get("/v1/things", headers=keyed("k-g")) for _ in range(2)]

    assert [r.json()["number"] for r in plain] == [1, 2]
    assert [r.json()["calls"] for r in gets] == [1, 2]
    assert not any("idempotent-replayed" in r.headers for r in plain + gets)


async def test_records_are_scoped_keys_that_expire(valkey_url: str) -> None:
    async with clients(idempotent(valkey_url, Calls(), ttl_s=30.0)) as client:
        await client().post(
            "/v1/things", content=b"{}", headers=keyed("k-t", **{USER_HEADER: "u1"})
        )

    store: Any = valkey_asyncio.from_url(valkey_url)  # type: ignore[no-untyped-call]
    try:
        (key,) = await store.keys("portico:gateway:v1:idem:*")
        ttl = await store.pttl(key)
        record = await store.hgetall(key)
    finally:
        await store.aclose()
    assert key.decode().startswith("portico:gateway:v1:idem:user:u1:")
    assert 25_000 < ttl <= 30_000
    assert record[b"state"] == b"done"
    stored_headers = {name.lower() for name, _ in json.loads(record[b"headers"])}
    assert stored_headers == {"content-type", "location", "etag"}  # never x-request-id


async def test_valkey_down_is_503_for_keyed_requests_only() -> None:
    calls = Calls()
    async with clients(idempotent(closed_port_url(), calls)) as client:
        keyed_post = await client().post("/v1/things", content=b"{}", headers=keyed("k-d"))
        plain_post = await client().post("/v1/things", content=b"{}", headers=JSON)

    assert keyed_post.status_code == 503
    assert keyed_post.headers["content-type"] == PROBLEM
    assert keyed_post.headers["retry-after"] == "1"
    assert plain_post.status_code == 201
    assert calls.counts["create"] == 1  # only the plain one ran


async def test_the_gateway_checks_keys_before_routing(valkey_url: str) -> None:
    app = create_app(GatewaySettings(valkey_url=SecretStr(valkey_url)))
    async with asgi_client(app) as client:
        response = await client.post("/v1/users", json={}, headers={"Idempotency-Key": "two words"})

    assert response.status_code == 400
    assert response.json()["type"].endswith("/invalid-idempotency-key")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-request-id"] == response.json()["request_id"]


async def test_a_chunked_body_over_the_limit_is_413_not_500(valkey_url: str) -> None:
    app = create_app(GatewaySettings(valkey_url=SecretStr(valkey_url), max_body_bytes=64))

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: only counting can catch it
        for _ in range(4):
            yield b"x" * 32

    async with asgi_client(app) as client:
        response = await client.post("/v1/users", content=chunks(), headers=keyed("k-big"))

    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
