"""The server as a whole: health, reflection, PostgreSQL outages, deadlines, graceful stop."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from portico.users.v1 import users_pb2, users_pb2_grpc
from portico_users.server import RunningServer, start
from tests.support.processes import exit_of, kill, read_until, spawn
from tests.support.tokens import DefaultBearer, Tokens, bearer, signing_material
from tests.support.users import closed_port, relay, tcp_dsn, users_settings

if TYPE_CHECKING:
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub

SERVICE = "portico.users.v1.UserService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health_of(channel: grpc.aio.Channel, service: str = "") -> int:
    health: Any = health_pb2_grpc.HealthStub(channel)  # the stubs type sync channels only
    response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
    return int(response.status)


async def wait_for_health(channel: grpc.aio.Channel, status: int, within_s: float) -> None:
    end = time.monotonic() + within_s
    while await health_of(channel, SERVICE) != status:
        assert time.monotonic() < end, f"health never became {status}"
        await asyncio.sleep(0.05)


async def test_health_is_serving_for_the_server_and_the_service(
    channel: grpc.aio.Channel,
) -> None:
    assert await health_of(channel) == SERVING
    assert await health_of(channel, SERVICE) == SERVING


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    reflection: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    responses = [r async for r in reflection.ServerReflectionInfo(iter([request]), timeout=5)]

    names = {s.name for s in responses[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


async def test_without_postgresql_it_starts_not_serving_and_recovers(
    database_url: str, valkey_url: str, tokens: Tokens
) -> None:
    port = closed_port()
    settings = users_settings(database_url=tcp_dsn(database_url, port), valkey_url=valkey_url)
    running = await start(settings)
    admin = [DefaultBearer(await tokens.admin())]
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{running.port}", interceptors=admin
        ) as channel:
            stub: UserServiceAsyncStub = users_pb2_grpc.UserServiceStub(channel)
            assert await health_of(channel) == NOT_SERVING
            assert await health_of(channel, SERVICE) == NOT_SERVING

            began = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListUsers(users_pb2.ListUsersRequest(), timeout=10)
            assert time.monotonic() - began < 3.0  # at once: not after the 10 s timeout
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            details = caught.value.details() or ""
            for leak in ("127.0.0.1", str(port), "Error", "Traceback", "SELECT"):
                assert leak not in details

            async with relay(database_url, port):  # PostgreSQL comes back
                await wait_for_health(channel, SERVING, within_s=5)
                created = await stub.CreateUser(
                    users_pb2.CreateUserRequest(email="back@example.com", display_name="B"),
                    timeout=5,
                )
                assert created.user.email == "back@example.com"
            await wait_for_health(channel, NOT_SERVING, within_s=5)  # and goes again
    finally:
        await running.stop(0)


async def lock_row(database_url: str, user_id: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(database_url)
    await conn.execute("BEGIN")
    await conn.execute("SELECT 1 FROM users.users WHERE id = $1 FOR UPDATE", user_id)
    return conn


async def blocked_updates(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE query LIKE '%UPDATE users.users%' AND wait_event_type = 'Lock'"
            )
        )
    finally:
        await conn.close()


async def test_a_call_past_its_deadline_ends_promptly_and_its_query_is_cancelled(
    stub: UserServiceAsyncStub, database_url: str
) -> None:
    user = (
        await stub.CreateUser(
            users_pb2.CreateUserRequest(email="d@example.com", display_name="D"), timeout=5
        )
    ).user
    locker = await lock_row(database_url, user.id)
    try:
        began = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.UpdateUser(
                users_pb2.UpdateUserRequest(
                    id=user.id, user=users_pb2.UserUpdate(display_name="E")
                ),
                timeout=0.5,
            )
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - began < 3.0  # the deadline, not the 5 s query limit
        end = time.monotonic() + 2
        while await blocked_updates(database_url):  # the server-side query was cancelled
            assert time.monotonic() < end, "the UPDATE outlived the caller's deadline"
            await asyncio.sleep(0.05)
    finally:
        await locker.close()


async def test_graceful_stop_turns_health_off_and_finishes_in_flight_calls(
    server: RunningServer, channel: grpc.aio.Channel, database_url: str
) -> None:
    stub: UserServiceAsyncStub = users_pb2_grpc.UserServiceStub(channel)
    user = (
        await stub.CreateUser(
            users_pb2.CreateUserRequest(email="g@example.com", display_name="G"), timeout=5
        )
    ).user
    health: Any = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
    assert (await watch.read()).status == SERVING
    locker = await lock_row(database_url, user.id)
    update = asyncio.ensure_future(
        stub.UpdateUser(
            users_pb2.UpdateUserRequest(id=user.id, user=users_pb2.UserUpdate(display_name="H")),
            timeout=10,
        )
    )
    for _ in range(100):  # wait until the call is in flight, blocked on the lock
        if await blocked_updates(database_url):
            break
        await asyncio.sleep(0.05)

    began = time.monotonic()
    stopping = asyncio.create_task(server.stop(5))
    assert (await watch.read()).status == NOT_SERVING
    watch.cancel()
    assert not stopping.done()
    await locker.close()  # releases the row lock

    response = await update
    await stopping
    assert response.user.display_name == "H"
    assert time.monotonic() - began < 5


def process_env(database_url: str, valkey_url: str, **settings: str) -> dict[str, str]:
    """The environment of a ``python -m portico_users`` process on a free port."""
    return {
        "USERS_JWKS_FILE": str(signing_material().jwks_file),
        "USERS_POSTGRES__DSN": database_url,
        "USERS_VALKEY__URL": valkey_url,
        "USERS_GRPC_PORT": "0",
        "USERS_METRICS_PORT": "0",
        **{f"USERS_{name.upper()}": value for name, value in settings.items()},
    }


async def wait_until_blocked(database_url: str) -> None:
    for _ in range(100):  # the UPDATE is in flight, waiting for the row lock
        if await blocked_updates(database_url):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the UPDATE never reached PostgreSQL")


async def test_the_process_drains_on_sigterm_and_exits_0(
    database_url: str, valkey_url: str, tokens: Tokens
) -> None:
    """SIGTERM: health NOT_SERVING first, calls still served during the delay, the in-flight
    (slow: row-locked) call finishes during the drain, then exit 0; no secret in the logs."""
    env = process_env(database_url, valkey_url, shutdown_grace_s="10", shutdown_delay_s="1")
    process = await spawn("portico_users", env)
    metadata = bearer(await tokens.admin())
    try:
        line = await read_until(process, "listening on", within_s=20)
        port = int(json.loads(line)["message"].rsplit(":", 1)[1])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await health_of(channel, SERVICE) == SERVING
            stub: UserServiceAsyncStub = users_pb2_grpc.UserServiceStub(channel)
            request = users_pb2.CreateUserRequest(email="p@example.com", display_name="P")
            user = (await stub.CreateUser(request, timeout=5, metadata=metadata)).user
            locker = await lock_row(database_url, user.id)
            try:
                update = asyncio.ensure_future(
                    stub.UpdateUser(
                        users_pb2.UpdateUserRequest(
                            id=user.id, user=users_pb2.UserUpdate(display_name="Q")
                        ),
                        timeout=15,
                        metadata=metadata,
                    )
                )
                await wait_until_blocked(database_url)
                process.send_signal(signal.SIGTERM)
                began = time.monotonic()
                seen = []
                for _ in range(40):  # within the shutdown delay (1 s), health says so
                    seen.append(await health_of(channel, SERVICE))
                    if seen[-1] == NOT_SERVING:
                        break
                    await asyncio.sleep(0.02)
                assert seen[-1] == NOT_SERVING, seen
                listed = await stub.ListUsers(
                    users_pb2.ListUsersRequest(), timeout=2, metadata=metadata
                )
                assert [u.id for u in listed.users] == [user.id]  # still served meanwhile
                await asyncio.sleep(max(0.0, began + 1.5 - time.monotonic()))  # now draining
                assert not update.done()
            finally:
                await locker.close()  # the in-flight call may finish now
            response = await update
            assert response.user.display_name == "Q"
        code, rest = await exit_of(process, within_s=10)
    finally:
        kill(process)
    assert code == 0, rest
    assert "stopped" in rest
    password = urlsplit(database_url).password
    assert not password or password not in line + rest


async def test_a_second_sigterm_cancels_in_flight_calls_and_exits_1(
    database_url: str, valkey_url: str, tokens: Tokens
) -> None:
    """With 30 s of grace left, a second SIGTERM ends the drain at once: the blocked call is
    cancelled, the process exits 1 promptly (not killed by the signal)."""
    env = process_env(database_url, valkey_url, shutdown_grace_s="30", shutdown_delay_s="0.2")
    process = await spawn("portico_users", env)
    metadata = bearer(await tokens.admin())
    try:
        line = await read_until(process, "listening on", within_s=20)
        port = int(json.loads(line)["message"].rsplit(":", 1)[1])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub: UserServiceAsyncStub = users_pb2_grpc.UserServiceStub(channel)
            request = users_pb2.CreateUserRequest(email="s@example.com", display_name="S")
            user = (await stub.CreateUser(request, timeout=5, metadata=metadata)).user
            locker = await lock_row(database_url, user.id)
            try:
                update = asyncio.ensure_future(
                    stub.UpdateUser(
                        users_pb2.UpdateUserRequest(
                            id=user.id, user=users_pb2.UserUpdate(display_name="T")
                        ),
                        timeout=20,
                        metadata=metadata,
                    )
                )
                await wait_until_blocked(database_url)
                process.send_signal(signal.SIGTERM)
                await read_until(process, "stopping", within_s=5)
                await asyncio.sleep(0.5)  # past the delay: draining, with 30 s of grace
                assert not update.done()
                process.send_signal(signal.SIGTERM)
                began = time.monotonic()
                code, rest = await exit_of(process, within_s=5)
                assert time.monotonic() - began < 6  # far within the 30 s of grace
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await update
                assert caught.value.code() in {
                    grpc.StatusCode.CANCELLED,
                    grpc.StatusCode.UNAVAILABLE,
                }
            finally:
                await locker.close()
    finally:
        kill(process)
    assert code == 1, rest
    assert "second signal" in rest
    assert "Traceback" not in rest
