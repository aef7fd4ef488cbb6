"""``/metrics`` after real traffic: RED histograms by route template, cache and pool gauges."""

from __future__ import annotations

import re
import socket

import httpx
import pytest

from portico_users.server import RunningServer, start
from tests.support.gateway import gateway_client
from tests.support.tokens import Tokens
from tests.support.users import users_settings

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_gateway_metrics_expose_red_by_route_template_cache_and_pool(
    api: httpx.AsyncClient, users_server: RunningServer, valkey_url: str, tokens: Tokens
) -> None:
    created = await api.post("/v1/users", json={"email": "m@example.com", "display_name": "M"})
    user_id = created.json()["id"]
    for _ in range(2):  # a miss everywhere (the service fills the cache), then an edge hit
        assert (await api.get(f"/v1/users/{user_id}")).status_code == 200
    async with gateway_client(  # the edge path off: a read the users cache answers
        users_port=users_server.port,
        valkey_url=valkey_url,
        token=await tokens.admin(),
        edge_reads=False,
    ) as through_service:
        assert (await through_service.get(f"/v1/users/{user_id}")).status_code == 200
    unknown = "00000000-0000-4000-8000-000000000000"
    assert (await api.get(f"/v1/users/{unknown}")).status_code == 404

    text = (await api.get("/metrics")).text

    # prometheus-client writes labels in alphabetical order
    ok = 'method="GET",route="/v1/users/{id}",status="200"'
    assert f"portico_http_server_duration_seconds_count{{{ok}}}" in text
    assert 'method="GET",route="/v1/users/{id}",status="404"' in text
    assert 'le="0.0001"' in text
    assert 'le="10.0"' in text
    assert user_id not in text
    assert unknown not in text
    assert "portico_http_server_in_flight_requests" in text
    get_user = 'method="GetUser",service="portico.users.v1.UserService"'
    assert f'portico_grpc_server_duration_seconds_count{{code="OK",{get_user}}}' in text
    assert f'portico_grpc_server_duration_seconds_count{{code="NOT_FOUND",{get_user}}}' in text
    assert f'portico_grpc_client_duration_seconds_count{{code="OK",{get_user}}}' in text
    assert re.search(r'portico_users_cache_requests_total\{result="hit"\} [1-9]', text)
    assert re.search(r'portico_users_cache_requests_total\{result="miss"\} [1-9]', text)
    assert re.search(r'portico_gateway_edge_reads_total\{result="hit"\} [1-9]', text)
    assert re.search(r'portico_gateway_edge_reads_total\{result="miss"\} [1-9]', text)
    assert 'portico_db_pool_in_use_connections{pool="users"}' in text
    assert re.search(r'portico_db_pool_idle_connections\{pool="users"\} [1-9]', text)
    assert 'portico_build_info{component="users",version="' in text
    assert 'portico_build_info{component="gateway",version="' in text
    assert "/metrics" not in (await api.get("/openapi.json")).json()["paths"]


async def test_openmetrics_scrapes_carry_trace_id_exemplars(api: httpx.AsyncClient) -> None:
    created = await api.post("/v1/users", json={"email": "x@example.com", "display_name": "X"})
    assert (await api.get(f"/v1/users/{created.json()['id']}")).status_code == 200

    response = await api.get("/metrics", headers={"Accept": OPENMETRICS})

    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert re.search(
        r'portico_http_server_duration_seconds_bucket\{[^}]*route="/v1/users/\{id\}"'
        r'.*\} \d+(\.\d+)? # \{trace_id="[0-9a-f]{32}"\}',
        response.text,
    )


@pytest.mark.usefixtures("spans")
async def test_the_users_service_serves_metrics_on_its_own_port(
    database_url: str, valkey_url: str
) -> None:
    port = _free_port()
    settings = users_settings(database_url=database_url, valkey_url=valkey_url, metrics_port=port)
    running = await start(settings)
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        await running.stop(0)

    assert response.status_code == 200
    assert 'portico_build_info{component="users"' in response.text
    assert 'portico_db_pool_max_connections{pool="users"} 10.0' in response.text
    with pytest.raises(httpx.ConnectError):  # stopped with the service
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/metrics")
