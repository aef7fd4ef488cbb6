"""After real traffic, /metrics exposes every Portico metric the dashboards and rules query.

Traffic goes through the real gateway (in-process ASGI) to real users and auth services on
loopback, over real PostgreSQL and Valkey: a REST sign-up and login (gateway -> auth -> users),
"who am I", and admin calls that create a user, read it twice (a cache miss, then a hit) and
read an unknown one (404). Then the three /metrics endpoints are scraped over HTTP.

One honest caveat: the servers run in this test process, and prometheus-client keeps its metrics
in one process-global default registry, so all three endpoints serve the same samples (the
union of the three components'), as ``test_metrics.py`` relies on too. The test therefore checks
the union against the catalog, and checks each component's own series by their labels
(``service="portico.users.v1.UserService"``, ``pool="auth"``, ...), which only that
component's code writes. In a cluster each process has its own registry.
"""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from portico_audit.server import start as start_audit
from portico_auth.server import start as start_auth
from portico_users.server import start as start_users
from tests.observability.catalog import (
    matchers,
    portico_sample_names,
    referenced_metrics,
    rule_queries,
    sample_names,
)
from tests.support.audit import audit_settings
from tests.support.auth import auth_settings
from tests.support.gateway import gateway_client
from tests.support.tokens import Tokens, signing_material
from tests.support.users import users_settings

PASSWORD = "correct horse battery staple"
#: Equality matchers in rules that no healthy traffic can satisfy, and why.
ONLY_ON_FAILURE = {
    ("result", "error"): "a users cache read fails only when Valkey does",
    ("result", "dead_lettered"): "the audit consumer dead-letters only poison entries",
}
#: Labels Prometheus adds to a target's series at scrape time; the exposition has none of them.
TARGET_LABELS = {"job", "instance", "namespace", "pod"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def stack(
    database_url: str, valkey_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, int]]]:
    """Users, auth and audit services with their metrics servers on free ports, the gateway in
    front of the first two.

    Yields the gateway's client and each service's metrics port by name.
    """
    ports = {"users": _free_port(), "auth": _free_port(), "audit": _free_port()}
    users_metrics, auth_metrics = ports["users"], ports["auth"]
    audit = await start_audit(
        audit_settings(
            database_url=database_url, valkey_url=valkey_url, metrics_port=ports["audit"]
        )
    )
    users = await start_users(
        users_settings(database_url=database_url, valkey_url=valkey_url, metrics_port=users_metrics)
    )
    try:
        auth = await start_auth(
            auth_settings(
                database_url=database_url,
                valkey_url=valkey_url,
                users_target=f"127.0.0.1:{users.port}",
                key_files=[signing_material().key_file],
                metrics_port=auth_metrics,
            )
        )
        try:
            async with gateway_client(
                users_port=users.port, auth_port=auth.port, valkey_url=valkey_url
            ) as api:
                yield api, ports
        finally:
            await auth.stop(0)
    finally:
        await users.stop(0)
        await audit.stop(0)


async def scrape_until(
    client: httpx.AsyncClient, port: int, names: set[str], timeout_s: float = 15.0
) -> httpx.Response:
    """The service's exposition once it has samples of all ``names`` (background work — the
    outbox relay, the audit consumer — records its metrics a little after the traffic)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        scrape = await client.get(f"http://127.0.0.1:{port}/metrics")
        if names <= sample_names(scrape.text) or asyncio.get_running_loop().time() > deadline:
            return scrape
        await asyncio.sleep(0.2)


async def drive_traffic(api: httpx.AsyncClient, tokens: Tokens) -> None:
    signed_up = await api.post(
        "/v1/auth/signup",
        json={
            "email": "metrics@example.com",
            "display_name": "Metrics",
            "password": PASSWORD,
            "idempotency_key": str(uuid.uuid4()),
        },
    )
    assert signed_up.status_code == 201, signed_up.text
    login = await api.post(
        "/v1/auth/token",
        data={"grant_type": "password", "username": "metrics@example.com", "password": PASSWORD},
    )
    assert login.status_code == 200, login.text
    bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
    assert (await api.get("/v1/users/me", headers=bearer)).status_code == 200

    admin = {"Authorization": f"Bearer {await tokens.admin()}"}
    created = await api.post(
        "/v1/users", json={"email": "c@example.com", "display_name": "C"}, headers=admin
    )
    assert created.status_code in (200, 201), created.text
    for _ in range(2):  # a cache miss, then a hit
        read = await api.get(f"/v1/users/{created.json()['id']}", headers=admin)
        assert read.status_code == 200, read.text
    unknown = "00000000-0000-4000-8000-000000000000"
    assert (await api.get(f"/v1/users/{unknown}", headers=admin)).status_code == 404


def series(exposition: str) -> list[tuple[str, dict[str, str]]]:
    """(sample name, labels) of every sample line."""
    found = []
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest.rsplit("}", 1)[0]))
            found.append((name.split(" ")[0], labels))
    return found


async def test_every_metric_the_dashboards_and_rules_query_is_exposed_after_traffic(
    database_url: str, valkey_url: str, tokens: Tokens
) -> None:
    async with stack(database_url, valkey_url) as (api, ports):
        await drive_traffic(api, tokens)
        gateway_scrape = await api.get("/metrics")
        async with httpx.AsyncClient() as client:
            users_scrape = await scrape_until(
                client, ports["users"], {"portico_outbox_published_total"}
            )
            auth_scrape = await client.get(f"http://127.0.0.1:{ports['auth']}/metrics")
            audit_scrape = await scrape_until(
                client,
                ports["audit"],
                {"portico_audit_events_total", "portico_audit_consumer_lag_entries"},
            )
    scrapes = {
        "gateway": gateway_scrape,
        "users": users_scrape,
        "auth": auth_scrape,
        "audit": audit_scrape,
    }
    for component, scrape in scrapes.items():
        assert scrape.status_code == 200, component
    text = "\n".join(scrape.text for scrape in scrapes.values())
    exposed = sample_names(text)

    # Portico's own metrics (recording rules are portico:..., not portico_...), and the process
    # metrics prometheus-client adds to every Portico process.
    wanted = {name for name in referenced_metrics() if name.startswith(("portico_", "process_"))}
    assert len(wanted) >= len(portico_sample_names()) // 2
    missing = wanted - exposed
    assert not missing, f"queried by dashboards or rules but not exposed: {sorted(missing)}"

    # Each component's own series, told apart by the labels its code writes.
    samples = series(text)
    labelled = {(name, k, v) for name, labels in samples for k, v in labels.items()}
    grpc = "portico_grpc_server_duration_seconds_count"
    assert (grpc, "service", "portico.users.v1.UserService") in labelled
    assert (grpc, "service", "portico.auth.v1.AuthService") in labelled
    assert ("portico_http_server_duration_seconds_count", "route", "/v1/auth/token") in labelled
    assert ("portico_db_pool_in_use_connections", "pool", "users") in labelled
    assert ("portico_db_pool_in_use_connections", "pool", "auth") in labelled
    assert ("portico_users_cache_requests_total", "result", "hit") in labelled
    assert ("portico_users_cache_requests_total", "result", "miss") in labelled


async def test_label_values_the_rules_select_exist_in_the_exposition(
    database_url: str, valkey_url: str, tokens: Tokens
) -> None:
    """A rule whose `service="..."` or `le="0.25"` matches nothing would stay silent forever."""
    async with stack(database_url, valkey_url) as (api, _):
        await drive_traffic(api, tokens)
        text = (await api.get("/metrics")).text
    labelled = {(name, k, v) for name, labels in series(text) for k, v in labels.items()}
    checked = 0
    for query in rule_queries():
        for m in matchers(query.promql):
            if m.op != "=" or m.label in TARGET_LABELS or not m.metric.startswith("portico_"):
                continue
            if (m.label, m.value) in ONLY_ON_FAILURE:
                continue
            checked += 1
            assert (m.metric, m.label, m.value) in labelled, f"{query.where}: {m}"
    assert checked >= 6  # the SLO services and latency thresholds of all three files
