"""RateLimitMiddleware over a real Valkey: GCRA per address and per user, headers, fail-open."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import httpx
import pytest
import valkey.asyncio as valkey_asyncio
from prometheus_client import REGISTRY
from pydantic import SecretStr

from portico_gateway.app import create_app
from portico_gateway.config import GatewaySettings
from portico_gateway.middleware.rate_limit import Limit, RateLimitMiddleware
from portico_gateway.middleware.security_headers import API_CSP
from tests.support.asgi import asgi_client
from tests.support.middleware import (
    USER_HEADER,
    Calls,
    build_app,
    clients,
    closed_port_url,
)

OFF = Limit(0, 1)
# draft-ietf-httpapi-ratelimit-headers-11: lists of `"name";param=int` items.
ITEM = r'"[a-z]+";[a-z]+=\d+(?:;[a-z]+=\d+)*'
LIST = re.compile(rf"{ITEM}(?:, {ITEM})*")


def items(value: str) -> dict[str, dict[str, int]]:
    """A RateLimit / RateLimit-Policy value, checked for its syntax, as name → parameters."""
    assert LIST.fullmatch(value), value
    parsed: dict[str, dict[str, int]] = {}
    for item in value.split(", "):
        name, *params = item.split(";")
        parsed[name.strip('"')] = {k: int(v) for k, v in (p.split("=") for p in params)}
    return parsed


def limited(valkey_url: str, calls: Calls, **options: Any) -> Any:
    return build_app(valkey_url, [(RateLimitMiddleware, options)], calls)


async def test_burst_is_served_then_429_then_one_request_per_interval(valkey_url: str) -> None:
    calls = Calls()
    app = limited(valkey_url, calls, address=Limit(60, 2), user=OFF)
    async with clients(app) as client:
        first, second = [await client().get("/v1/things") for _ in range(2)]
        refused = await client().get("/v1/things")
        again = await client().get("/v1/things")  # a refused request consumes nothing…
        await asyncio.sleep(1.05)
        recovered = await client().get("/v1/things")  # …so one interval later one is allowed
        after = await client().get("/v1/things")

    assert [first.status_code, second.status_code] == [200, 200]
    assert items(first.headers["ratelimit"]) == {"address": {"r": 1, "t": 1}}
    assert items(second.headers["ratelimit"]) == {"address": {"r": 0, "t": 2}}
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 429
    assert "address" in refused.json()["detail"]
    assert refused.headers["retry-after"] == "1"
    assert items(refused.headers["ratelimit"]) == {"address": {"r": 0, "t": 1}}
    assert items(refused.headers["ratelimit-policy"]) == {"address": {"q": 2, "w": 2}}
    assert again.status_code == 429
    assert recovered.status_code == 200
    assert after.status_code == 429
    assert calls.counts["list"] == 3  # refused requests never reached the handler


async def test_policies_are_advertised_on_successes(valkey_url: str) -> None:
    app = limited(valkey_url, Calls(), address=Limit(120, 4), user=Limit(60, 3))
    async with clients(app) as client:
        anonymous = await client().get("/v1/things")
        signed_in = await client().get("/v1/things", headers={USER_HEADER: "u1"})

    assert items(anonymous.headers["ratelimit-policy"]) == {"address": {"q": 4, "w": 2}}
    assert items(anonymous.headers["ratelimit"]) == {"address": {"r": 3, "t": 1}}
    assert items(signed_in.headers["ratelimit-policy"]) == {
        "address": {"q": 4, "w": 2},
        "user": {"q": 3, "w": 3},
    }
    assert items(signed_in.headers["ratelimit"]) == {
        "address": {"r": 2, "t": 1},
        "user": {"r": 2, "t": 1},
    }


async def test_each_user_has_its_own_quota_across_addresses(valkey_url: str) -> None:
    app = limited(valkey_url, Calls(), address=Limit(600, 50), user=Limit(60, 2))
    async with clients(app) as client:
        alice = {USER_HEADER: "alice"}
        statuses = [
            (await client("192.0.2.1").get("/v1/things", headers=alice)).status_code,
            (await client("192.0.2.2").get("/v1/things", headers=alice)).status_code,
        ]
        refused = await client("192.0.2.3").get("/v1/things", headers=alice)
        bob = await client("192.0.2.1").get("/v1/things", headers={USER_HEADER: "bob"})

    assert statuses == [200, 200]
    assert refused.status_code == 429
    assert items(refused.headers["ratelimit"]) == {"user": {"r": 0, "t": 1}}  # only the spent one
    assert bob.status_code == 200
    assert items(bob.headers["ratelimit"])["user"]["r"] == 1


async def test_each_address_has_its_own_quota(valkey_url: str) -> None:
    app = limited(valkey_url, Calls(), address=Limit(60, 1), user=OFF)
    async with clients(app) as client:
        one = [(await client("198.51.100.1").get("/v1/things")).status_code for _ in range(2)]
        other = await client("198.51.100.2").get("/v1/things")

    assert one == [200, 429]
    assert other.status_code == 200


async def test_a_refusal_by_one_policy_consumes_no_quota_of_the_other(valkey_url: str) -> None:
    app = limited(valkey_url, Calls(), address=Limit(60, 3), user=Limit(60, 1))
    async with clients(app) as client:
        ok = await client().get("/v1/things", headers={USER_HEADER: "alice"})
        refused = await client().get("/v1/things", headers={USER_HEADER: "alice"})
        other_user = await client().get("/v1/things", headers={USER_HEADER: "bob"})

    assert (ok.status_code, refused.status_code, other_user.status_code) == (200, 429, 200)
    assert items(ok.headers["ratelimit"])["address"]["r"] == 2
    assert items(other_user.headers["ratelimit"])["address"]["r"] == 1  # not 0


async def test_probes_and_scrapes_are_never_limited(valkey_url: str) -> None:
    app = limited(valkey_url, Calls(), address=Limit(60, 1), user=Limit(60, 1))
    async with clients(app) as client:
        answers = [
            await client().get(path, headers={USER_HEADER: "u1"})
            for path in ["/healthz", "/metrics"] * 4
        ]

    assert {a.status_code for a in answers} == {200}
    assert not any("ratelimit" in a.headers for a in answers)


async def test_zero_per_minute_turns_a_limit_off(valkey_url: str) -> None:
    app = limited(valkey_url, Calls(), address=OFF, user=OFF)
    async with clients(app) as client:
        answers = [await client().get("/v1/things", headers={USER_HEADER: "u"}) for _ in range(5)]

    assert {a.status_code for a in answers} == {200}
    assert "ratelimit" not in answers[0].headers


async def test_keys_follow_the_layout_and_expire(valkey_url: str) -> None:
    app = limited(valkey_url, Calls(), address=Limit(60, 2), user=Limit(30, 2))
    async with clients(app) as client:
        await client("203.0.113.9").get("/v1/things", headers={USER_HEADER: "u7"})

    store: Any = valkey_asyncio.from_url(valkey_url)  # type: ignore[no-untyped-call]
    try:
        keys = sorted(k.decode() for k in await store.keys("portico:gateway:v1:rl:*"))
        ttls = [await store.pttl(k) for k in keys]
    finally:
        await store.aclose()
    assert keys == [
        "portico:gateway:v1:rl:address:203.0.113.9",
        "portico:gateway:v1:rl:user:u7",
    ]
    assert 0 < ttls[0] <= 1000  # one interval of 1 s spent: full again within 1 s
    assert 1000 < ttls[1] <= 2000  # 30/min: one interval is 2 s


async def test_valkey_down_fails_open_with_a_counter_and_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = Calls()
    app = limited(
        closed_port_url(), calls, address=Limit(60, 1), user=Limit(60, 1), warning_interval_s=60
    )
    before = REGISTRY.get_sample_value("portico_gateway_rate_limit_errors_total") or 0.0
    with caplog.at_level(logging.WARNING, logger="portico_gateway.middleware.rate_limit"):
        async with clients(app) as client:
            answers: list[httpx.Response] = [
                await client().get("/v1/things", headers={USER_HEADER: "u1"}) for _ in range(3)
            ]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert calls.counts["list"] == 3
    assert not any("ratelimit" in a.headers for a in answers)
    after = REGISTRY.get_sample_value("portico_gateway_rate_limit_errors_total")
    assert after == before + 3
    warnings = [r for r in caplog.records if r.name == "portico_gateway.middleware.rate_limit"]
    assert len(warnings) == 1
    assert "failing open" in warnings[0].getMessage()


async def test_the_script_is_reloaded_after_valkey_forgets_it(valkey_url: str) -> None:
    app = limited(valkey_url, Calls(), address=Limit(60, 5), user=OFF)
    async with clients(app) as client:
        first = await client().get("/v1/things")
        store: Any = valkey_asyncio.from_url(valkey_url)  # type: ignore[no-untyped-call]
        try:
            await store.script_flush()
        finally:
            await store.aclose()
        second = await client().get("/v1/things")

    assert items(first.headers["ratelimit"])["address"]["r"] == 4
    assert items(second.headers["ratelimit"])["address"]["r"] == 3


async def test_the_gateway_limits_inside_request_ids_and_security_headers(valkey_url: str) -> None:
    settings = GatewaySettings(
        valkey_url=SecretStr(valkey_url),
        rate_limit_address_per_minute=60,
        rate_limit_address_burst=1,
    )
    async with asgi_client(create_app(settings)) as client:
        served = await client.get("/openapi.json")
        refused = await client.get("/openapi.json")
        probes = [await client.get("/healthz") for _ in range(3)]

    assert served.status_code == 200
    assert items(served.headers["ratelimit"]) == {"address": {"r": 0, "t": 1}}
    assert refused.status_code == 429
    assert refused.json()["request_id"] == refused.headers["x-request-id"]
    assert refused.headers["x-content-type-options"] == "nosniff"
    assert refused.headers["content-security-policy"] == API_CSP
    assert [p.status_code for p in probes] == [200, 200, 200]
