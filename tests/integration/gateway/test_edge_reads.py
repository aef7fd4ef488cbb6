"""The edge path: the gateway answers ``portico.edge.v1.cacheable`` reads from the users cache.

Real users service, real PostgreSQL and Valkey, the real gateway over HTTP. The gateway's reads of
the cache are counted twice: by its own ``portico_gateway_edge_reads_total`` and by Valkey itself
(``INFO commandstats``: only the edge path sends ``HMGET`` during a GET), so "no cache read" is
what Valkey saw, not what the code says it did. The service's own cache reads
(``portico_users_cache_requests_total``, same process) show whether a read reached the service.

These tests use no module of the feature itself (settings are passed by name), so on the code
before it they fail on their assertions: the hit counter stays absent, no ``Cache-Control``,
no 304.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import valkey.asyncio as valkey_asyncio
from prometheus_client import REGISTRY
from pydantic import SecretStr
from valkey.exceptions import NoPermissionError

from portico_devstack.backends import EmbeddedValkey
from portico_users.server import RunningServer, start
from tests.support.gateway import gateway_client
from tests.support.stores import VALKEY_PASSWORDS, component_valkey_url
from tests.support.tokens import Tokens
from tests.support.users import users_settings

KEY_PREFIX = "portico:users:v1:user:"
RESULTS = ("hit", "miss", "tombstone", "error")
#: What differs between two answers of one problem: the request's own ids.
PER_REQUEST = {"request_id", "trace_id"}


def edge_reads() -> dict[str, float]:
    return {
        r: REGISTRY.get_sample_value("portico_gateway_edge_reads_total", {"result": r}) or 0.0
        for r in RESULTS
    }


def service_cache_reads() -> float:
    return sum(
        REGISTRY.get_sample_value("portico_users_cache_requests_total", {"result": r}) or 0.0
        for r in ("hit", "miss", "error")
    )


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Valkey:
    """The test's admin view of a Valkey server: entries and command counts."""

    def __init__(self, url: str) -> None:
        self.client: Any = valkey_asyncio.from_url(url)  # type: ignore[no-untyped-call]

    async def hmget_calls(self) -> int:
        stats = await self.client.info("commandstats")
        return int(stats.get("cmdstat_hmget", {}).get("calls", 0))


@pytest.fixture
async def admin_valkey(valkey_url: str) -> AsyncIterator[Valkey]:
    view = Valkey(valkey_url)
    try:
        yield view
    finally:
        await view.client.aclose()


@pytest.fixture
async def edge(users_server: RunningServer, valkey_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with the edge path on (the default); requests carry no token of their own."""
    async with gateway_client(users_port=users_server.port, valkey_url=valkey_url) as client:
        yield client


@pytest.fixture
async def through_service(
    users_server: RunningServer, valkey_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with the edge path off: every read is a call of the users service."""
    async with gateway_client(
        users_port=users_server.port, valkey_url=valkey_url, edge_reads=False
    ) as client:
        yield client


async def create_user(api: httpx.AsyncClient, admin: str, name: str = "Ada") -> str:
    response = await api.post(
        "/v1/users",
        json={"email": f"{uuid.uuid4().hex}@example.com", "display_name": name},
        headers=auth(admin),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_a_cached_read_is_answered_by_the_gateway_exactly_as_the_service_answers_it(
    edge: httpx.AsyncClient, through_service: httpx.AsyncClient, tokens: Tokens
) -> None:
    user_id = await create_user(edge, await tokens.admin())
    token = await tokens.issue(user_id)
    served = await through_service.get(f"/v1/users/{user_id}", headers=auth(token))  # fills
    assert served.status_code == 200, served.text

    before, service_before = edge_reads(), service_cache_reads()
    answered = await edge.get(f"/v1/users/{user_id}", headers=auth(token))

    assert answered.status_code == 200
    assert delta(before, edge_reads()) == {"hit": 1.0}
    assert service_cache_reads() == service_before  # the service was not asked
    assert answered.json() == served.json()
    for name in ("ETag", "Content-Type", "Cache-Control", "Vary"):
        assert answered.headers[name] == served.headers[name], name
    assert answered.headers["Cache-Control"] == "private, no-cache"
    assert answered.headers["Vary"] == "Authorization"
    assert answered.headers["ETag"] == f'"{answered.json()["etag"]}"'

    me = await edge.get("/v1/users/me", headers=auth(token))  # GetCurrentUser: the same entry
    assert me.status_code == 200
    assert me.json() == served.json()
    assert delta(before, edge_reads()) == {"hit": 2.0}


async def test_reading_someone_elses_cached_record_is_refused_before_any_cache_read(
    edge: httpx.AsyncClient,
    through_service: httpx.AsyncClient,
    tokens: Tokens,
    admin_valkey: Valkey,
) -> None:
    admin = await tokens.admin()
    owner = await create_user(edge, admin, "Owner")
    assert (await edge.get(f"/v1/users/{owner}", headers=auth(admin))).status_code == 200
    assert await admin_valkey.client.exists(KEY_PREFIX + owner)  # cached
    stranger = await tokens.issue()

    before, hmgets = edge_reads(), await admin_valkey.hmget_calls()
    refused = await edge.get(f"/v1/users/{owner}", headers=auth(stranger))
    anonymous = await edge.get(f"/v1/users/{owner}")
    guessed = await edge.get(f"/v1/users/{owner}", headers={**auth(stranger), "If-None-Match": "*"})
    assert edge_reads() == before
    assert await admin_valkey.hmget_calls() == hmgets  # Valkey saw no read of the entry

    uncached = await through_service.get(f"/v1/users/{owner}", headers=auth(stranger))
    assert refused.status_code == uncached.status_code == guessed.status_code == 403
    body, expected = refused.json(), uncached.json()
    assert {k: v for k, v in body.items() if k not in PER_REQUEST} == {
        k: v for k, v in expected.items() if k not in PER_REQUEST
    }
    assert refused.headers["WWW-Authenticate"] == uncached.headers["WWW-Authenticate"]
    assert "ETag" not in refused.headers
    assert "ETag" not in guessed.headers
    assert anonymous.status_code == 401

    admin_read = await edge.get(f"/v1/users/{owner}", headers=auth(admin))
    assert admin_read.status_code == 200
    assert delta(before, edge_reads()) == {"hit": 1.0}


@pytest.mark.parametrize(
    ("name", "value"),
    [(b"grpc-timeout", b"soon"), (b"x-forwarded-for", b"a\tb"), (b"x-portico-canary", b"caf\xe9")],
)
async def test_a_request_the_service_path_refuses_is_refused_on_a_hit_alike(
    edge: httpx.AsyncClient,
    through_service: httpx.AsyncClient,
    tokens: Tokens,
    name: bytes,
    value: bytes,
) -> None:
    """A header the service path cannot use (a malformed deadline, a value gRPC cannot carry)
    is the same 400 whether or not the entry is cached, and causes no cache read."""
    admin = await tokens.admin()
    user_id = await create_user(edge, admin)
    assert (await edge.get(f"/v1/users/{user_id}", headers=auth(admin))).status_code == 200
    headers = {b"authorization": f"Bearer {admin}".encode(), name: value}
    before = edge_reads()
    refused = await edge.get(f"/v1/users/{user_id}", headers=headers)
    uncached = await through_service.get(f"/v1/users/{user_id}", headers=headers)
    assert refused.status_code == uncached.status_code == 400
    assert {k: v for k, v in refused.json().items() if k not in PER_REQUEST} == {
        k: v for k, v in uncached.json().items() if k not in PER_REQUEST
    }
    assert edge_reads() == before


async def test_if_none_match_is_304_only_for_a_caller_who_may_read_and_never_reveals_a_user(
    edge: httpx.AsyncClient, through_service: httpx.AsyncClient, tokens: Tokens
) -> None:
    admin = await tokens.admin()
    user_id = await create_user(edge, admin)
    token = await tokens.issue(user_id)
    etag = (await edge.get(f"/v1/users/{user_id}", headers=auth(token))).headers["ETag"]

    for api in (edge, through_service):  # the edge hit and the service's answer alike
        for tag in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            response = await api.get(
                f"/v1/users/{user_id}", headers={**auth(token), "If-None-Match": tag}
            )
            assert response.status_code == 304, (api, tag)
            assert response.content == b""
            assert response.headers["ETag"] == etag
            assert response.headers["Cache-Control"] == "private, no-cache"
            assert response.headers["Vary"] == "Authorization"
        stale = await api.get(
            f"/v1/users/{user_id}", headers={**auth(token), "If-None-Match": '"AAAAAAAAAAA"'}
        )
        assert stale.status_code == 200
        assert stale.headers["ETag"] == etag

    # A user who does not exist: the answer an admin gets with If-None-Match is the one without.
    missing = "00000000-0000-4000-8000-000000000000"
    plain = await edge.get(f"/v1/users/{missing}", headers=auth(admin))
    for tag in ("*", etag):
        conditional = await edge.get(
            f"/v1/users/{missing}", headers={**auth(admin), "If-None-Match": tag}
        )
        assert conditional.status_code == plain.status_code == 404
    # And to anyone else, a real and a made-up id look the same: 403 either way.
    stranger = await tokens.issue()
    for target in (user_id, missing):
        response = await edge.get(
            f"/v1/users/{target}", headers={**auth(stranger), "If-None-Match": "*"}
        )
        assert response.status_code == 403


async def test_a_tombstone_or_an_undecodable_entry_goes_to_the_service(
    edge: httpx.AsyncClient, tokens: Tokens, admin_valkey: Valkey
) -> None:
    admin = await tokens.admin()
    user_id = await create_user(edge, admin)
    good = await edge.get(f"/v1/users/{user_id}", headers=auth(admin))
    assert good.status_code == 200

    await admin_valkey.client.hset(KEY_PREFIX + user_id, mapping={"v": "99", "d": b"\xff\xff"})
    before = edge_reads()
    response = await edge.get(f"/v1/users/{user_id}", headers=auth(admin))
    assert response.status_code == 200
    assert response.json() == good.json()  # from PostgreSQL, through the service
    assert delta(before, edge_reads()) == {"error": 1.0}

    assert (await edge.delete(f"/v1/users/{user_id}", headers=auth(admin))).status_code == 204
    assert await admin_valkey.client.hget(KEY_PREFIX + user_id, "v") == b"deleted"
    before = edge_reads()
    gone = await edge.get(f"/v1/users/{user_id}", headers=auth(admin))
    assert gone.status_code == 404
    assert gone.headers["Content-Type"] == "application/problem+json"
    assert delta(before, edge_reads()) == {"tombstone": 1.0}


async def test_the_switch_turns_the_edge_path_off_and_keeps_the_http_semantics(
    through_service: httpx.AsyncClient, tokens: Tokens, admin_valkey: Valkey
) -> None:
    admin = await tokens.admin()
    user_id = await create_user(through_service, admin)
    await through_service.get(f"/v1/users/{user_id}", headers=auth(admin))  # cached by users
    before, hmgets = edge_reads(), await admin_valkey.hmget_calls()
    response = await through_service.get(f"/v1/users/{user_id}", headers=auth(admin))
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "private, no-cache"
    assert edge_reads() == before
    assert await admin_valkey.hmget_calls() == hmgets


async def test_reads_still_answer_while_the_cache_instance_is_stopped(
    database_url: str, valkey_url: str, tokens: Tokens, tmp_path: Path
) -> None:
    """The users cache on an instance of its own (as deployed), stopped under a warm entry."""
    cache = EmbeddedValkey(tmp_path / "valkey-cache", passwords=VALKEY_PASSWORDS)
    cache.start()
    try:
        settings = users_settings(database_url=database_url, valkey_url=valkey_url)
        settings.valkey.cache_url = SecretStr(component_valkey_url(cache.url, "users"))
        server = await start(settings)
        try:
            async with gateway_client(
                users_port=server.port,
                valkey_url=valkey_url,
                valkey_cache_url=SecretStr(component_valkey_url(cache.url, "gateway")),
            ) as api:
                admin = await tokens.admin()
                user_id = await create_user(api, admin)
                first = await api.get(f"/v1/users/{user_id}", headers=auth(admin))
                before = edge_reads()
                assert (await api.get(f"/v1/users/{user_id}", headers=auth(admin))).json() == (
                    first.json()
                )
                assert delta(before, edge_reads()) == {"hit": 1.0}

                cache.stop()
                before = edge_reads()
                for _ in range(3):
                    response = await api.get(f"/v1/users/{user_id}", headers=auth(admin))
                    assert response.status_code == 200
                    assert response.json() == first.json()
                    assert response.headers["ETag"] == first.headers["ETag"]
                assert delta(before, edge_reads()) == {"error": 3.0}
        finally:
            await server.stop(0)
    finally:
        cache.stop()


async def test_the_gateways_valkey_user_may_read_the_cache_but_never_write_it(
    edge: httpx.AsyncClient, tokens: Tokens, valkey_url: str
) -> None:
    user_id = await create_user(edge, await tokens.admin())
    await edge.get(f"/v1/users/{user_id}", headers=auth(await tokens.issue(user_id)))
    gateway: Any = valkey_asyncio.from_url(  # type: ignore[no-untyped-call]
        component_valkey_url(valkey_url, "gateway")
    )
    try:
        version_held, data = await gateway.hmget(KEY_PREFIX + user_id, ["v", "d"])
        assert version_held is not None
        assert data
        for command in (
            ("HSET", KEY_PREFIX + user_id, "v", "999"),
            ("DEL", KEY_PREFIX + user_id),
            ("HGETALL", KEY_PREFIX + user_id),
            ("HMGET", "portico:users:v1:other", "v"),
        ):
            with pytest.raises(NoPermissionError):
                await gateway.execute_command(*command)
    finally:
        await gateway.aclose()
