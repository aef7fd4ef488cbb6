"""The auth server as a whole: health, reflection, and the signing-key start-up rules."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from portico.auth.v1 import auth_pb2, auth_pb2_grpc
from portico_auth.keys import KeyConfigError, generate_key_file
from portico_auth.server import start
from portico_users.server import RunningServer as UsersServer
from tests.support.auth import auth_settings
from tests.support.processes import exit_of, kill, read_until, spawn

SERVICE = "portico.auth.v1.AuthService"
SERVING = health_pb2.HealthCheckResponse.SERVING


async def test_health_is_serving_and_reflection_lists_the_services(
    channel: grpc.aio.Channel,
) -> None:
    health: Any = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        assert response.status == SERVING

    reflection: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = [r async for r in reflection.ServerReflectionInfo(iter([request]), timeout=5)]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


async def test_production_without_key_files_refuses_to_start(
    database_url: str, valkey_url: str
) -> None:
    settings = auth_settings(
        database_url=database_url,
        valkey_url=valkey_url,
        users_target="127.0.0.1:1",
        key_files=[],
        environment="production",
    )
    with pytest.raises(KeyConfigError, match="AUTH_SIGNING_KEY_FILES"):
        await start(settings)


async def test_dev_without_key_files_warns_and_signs_with_an_ephemeral_key(
    database_url: str, valkey_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = auth_settings(
        database_url=database_url, valkey_url=valkey_url, users_target="127.0.0.1:1", key_files=[]
    )
    with caplog.at_level(logging.WARNING, logger="portico_auth.keys"):
        running = await start(settings)
    try:
        assert any("EPHEMERAL" in r.getMessage() for r in caplog.records)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            auth: Any = auth_pb2_grpc.AuthServiceStub(channel)
            jwks = await auth.GetJwks(auth_pb2.GetJwksRequest(), timeout=5)
        assert len(jwks.keys) == 1
    finally:
        await running.stop(0)


async def test_every_configured_key_is_published_and_the_active_one_signs(
    database_url: str, valkey_url: str, tmp_path: Path
) -> None:
    old_kid = generate_key_file(tmp_path / "old.pem")
    new_kid = generate_key_file(tmp_path / "new.pem")
    settings = auth_settings(
        database_url=database_url,
        valkey_url=valkey_url,
        users_target="127.0.0.1:1",
        key_files=[tmp_path / "old.pem", tmp_path / "new.pem"],
        active_kid=new_kid,
    )
    running = await start(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            auth: Any = auth_pb2_grpc.AuthServiceStub(channel)
            jwks = await auth.GetJwks(auth_pb2.GetJwksRequest(), timeout=5)
        assert [k.kid for k in jwks.keys] == [new_kid, old_kid]
    finally:
        await running.stop(0)


async def test_the_process_stops_its_background_tasks_and_exits_0_on_sigterm(
    database_url: str, valkey_url: str, users_server: UsersServer, key_file: Path
) -> None:
    """SIGTERM with the health probe and the sign-up reconciler busy (every 50 ms): health goes
    NOT_SERVING, the tasks stop, the drain ends and the process exits 0 within delay + grace."""
    env = {
        "AUTH_POSTGRES__DSN": database_url,
        "AUTH_VALKEY__URL": valkey_url,
        "AUTH_SIGNING_KEY_FILES": str(key_file),
        "AUTH_USERS_TARGET": f"127.0.0.1:{users_server.port}",
        "AUTH_GRPC_PORT": "0",
        "AUTH_METRICS_PORT": "0",
        "AUTH_HEALTH_CHECK_INTERVAL_S": "0.05",
        "AUTH_SIGNUP__RECONCILE_INTERVAL_S": "0.05",
        "AUTH_SHUTDOWN_DELAY_S": "2",
        "AUTH_SHUTDOWN_GRACE_S": "2",
    }
    process = await spawn("portico_auth", env)
    try:
        line = await read_until(process, "listening on", within_s=20)
        address = json.loads(line)["message"].split("listening on ")[1].split()[0]
        port = int(address.rsplit(":", 1)[1])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health: Any = health_pb2_grpc.HealthStub(channel)
            check = health_pb2.HealthCheckRequest(service=SERVICE)
            assert (await health.Check(check, timeout=2)).status == SERVING
            await asyncio.sleep(0.3)  # a few probe and reconciler rounds
            process.send_signal(signal.SIGTERM)
            began = time.monotonic()
            # The signal reaches the loop asynchronously: a check sent at once may still be
            # answered first. Within the shutdown delay (2 s), health must say NOT_SERVING.
            seen = []
            for _ in range(60):
                seen.append((await health.Check(check, timeout=2)).status)
                if seen[-1] == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                await asyncio.sleep(0.02)
            assert seen[-1] == health_pb2.HealthCheckResponse.NOT_SERVING, seen
            assert time.monotonic() - began < 2.0, seen
        code, rest = await exit_of(process, within_s=10)
        # delay + grace, and the slack a busy machine needs to exit a process
        assert time.monotonic() - began < 2.0 + 2 + 4
    finally:
        kill(process)
    assert code == 0, rest
    assert "auth service stopped" in rest
    assert "Traceback" not in rest
