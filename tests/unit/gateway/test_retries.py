"""gRPC's own retries of idempotent calls, over the wire to a real grpc.aio server that fails."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from portico.users.v1 import users_pb2, users_pb2_grpc
from portico_gateway.app import upstream_services
from portico_gateway.clients.retries import channel_options, service_config
from portico_gateway.config import GatewaySettings
from tests.support.asgi import asgi_client
from tests.unit.gateway.conftest import ADMIN, Context, FakeUsers, gateway_app, settings_for


class FlakyUsers(FakeUsers):
    """Counts calls per RPC; GetUser ``down`` always answers UNAVAILABLE, ``flaky`` once, and
    ``stopping`` CANCELLED once."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    async def GetUser(  # noqa: N802
        self, request: users_pb2.GetUserRequest, context: Context
    ) -> users_pb2.GetUserResponse:
        self.calls["GetUser"] += 1
        if request.id == "down" or (request.id == "flaky" and self.calls["GetUser"] == 1):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "database down")
        if request.id == "stopping" and self.calls["GetUser"] == 1:
            # what a stopping server answers to a call it had received but not started
            await context.abort(grpc.StatusCode.CANCELLED, "CANCELLED")
        return await super().GetUser(request, context)

    async def CreateUser(  # noqa: N802
        self, request: users_pb2.CreateUserRequest, context: Context
    ) -> users_pb2.CreateUserResponse:
        self.calls["CreateUser"] += 1
        return await super().CreateUser(request, context)


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[str, FlakyUsers]]:
    server = grpc.aio.server()
    servicer = FlakyUsers()
    users_pb2_grpc.add_UserServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", servicer
    await server.stop(None)


def _settings(target: str, **overrides: Any) -> GatewaySettings:
    return settings_for(target, retry_initial_backoff_s=0.01, retry_max_backoff_s=0.02, **overrides)


async def test_an_idempotent_call_is_retried_on_unavailable(
    flaky: tuple[str, FlakyUsers],
) -> None:
    target, servicer = flaky
    async with asgi_client(gateway_app(_settings(target)), headers=ADMIN) as http:
        response = await http.get("/v1/users/flaky")
    assert response.status_code == 200, response.text
    assert servicer.calls["GetUser"] == 2


async def test_a_read_a_stopping_server_cancelled_is_retried(
    flaky: tuple[str, FlakyUsers],
) -> None:
    target, servicer = flaky
    async with asgi_client(gateway_app(_settings(target)), headers=ADMIN) as http:
        response = await http.get("/v1/users/stopping")
    assert response.status_code == 200, response.text
    assert servicer.calls["GetUser"] == 2


async def test_without_retries_an_upstream_cancelled_is_a_503_with_retry_after(
    flaky: tuple[str, FlakyUsers],
) -> None:
    target, servicer = flaky
    async with asgi_client(
        gateway_app(_settings(target, retry_max_attempts=1)), headers=ADMIN
    ) as http:
        response = await http.get("/v1/users/stopping")
    assert response.status_code == 503, response.text
    assert "Retry-After" in response.headers
    assert servicer.calls["GetUser"] == 1


async def test_a_post_is_never_retried(flaky: tuple[str, FlakyUsers]) -> None:
    target, servicer = flaky
    async with asgi_client(gateway_app(_settings(target)), headers=ADMIN) as http:
        response = await http.post(
            "/v1/users", json={"email": "code-UNAVAILABLE@example.com", "display_name": "A"}
        )
    assert response.status_code == 503
    assert servicer.calls["CreateUser"] == 1


async def test_one_attempt_turns_retries_off(flaky: tuple[str, FlakyUsers]) -> None:
    target, servicer = flaky
    settings = _settings(target, retry_max_attempts=1)
    assert channel_options([users_pb2.DESCRIPTOR.services_by_name["UserService"]], settings) == ()
    async with asgi_client(gateway_app(settings), headers=ADMIN) as http:
        response = await http.get("/v1/users/flaky")
    assert response.status_code == 503
    assert servicer.calls["GetUser"] == 1


async def test_the_budget_stops_retries_during_an_outage(flaky: tuple[str, FlakyUsers]) -> None:
    target, servicer = flaky
    requests = 20
    async with asgi_client(gateway_app(_settings(target)), headers=ADMIN) as http:
        for _ in range(requests):
            assert (await http.get("/v1/users/down")).status_code == 503
    # The first failures are retried; once half the 10 tokens are spent, none is.
    assert requests < servicer.calls["GetUser"] < 2 * requests


def test_the_service_config_lists_exactly_the_get_bound_methods() -> None:
    settings = GatewaySettings()
    services = [service for _, service in upstream_services(settings).values()]
    (method_config,) = service_config(services, settings)["methodConfig"]
    names = {(n["service"].rsplit(".", 1)[-1], n["method"]) for n in method_config["name"]}
    assert names == {
        ("UserService", "GetUser"),
        ("UserService", "GetCurrentUser"),
        ("UserService", "ListUsers"),
        ("AuthService", "GetJwks"),
        ("AuthService", "ListUserSessions"),
        ("AuditService", "ListAuditEvents"),
    }
    assert method_config["retryPolicy"] == {
        "maxAttempts": 3,
        "initialBackoff": "0.05s",
        "maxBackoff": "0.5s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
    }
    config = json.loads(dict(channel_options(services, settings))["grpc.service_config"])
    assert config["retryThrottling"] == {"maxTokens": 10, "tokenRatio": 0.1}
