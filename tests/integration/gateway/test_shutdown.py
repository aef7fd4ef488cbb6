"""The gateway process on SIGTERM: /readyz 503 first, in-flight requests finish, exit 0; a second
signal forces a prompt exit (1); with ``GATEWAY_REUSE_PORT`` a new gateway joins the port and the
old one leaves it without a refused connection. Real processes: the gateway runs as
``python -m portico_gateway`` in front of real users and auth servers; a slow request is a PATCH
whose row is locked."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from portico_audit.server import RunningServer as AuditServer
from portico_auth.server import start as start_auth
from portico_users.server import RunningServer
from tests.integration.users.test_server import lock_row, wait_until_blocked
from tests.support.auth import auth_settings
from tests.support.processes import exit_of, free_port, kill, read_until, spawn
from tests.support.tokens import Tokens, signing_material


@pytest.fixture
async def auth_port(
    database_url: str, valkey_url: str, users_server: RunningServer
) -> AsyncIterator[int]:
    """A real auth server (the gateway's JWKS source), signing with the test key."""
    running = await start_auth(
        auth_settings(
            database_url=database_url,
            valkey_url=valkey_url,
            users_target=f"127.0.0.1:{users_server.port}",
            key_files=[signing_material().key_file],
        )
    )
    try:
        yield running.port
    finally:
        await running.stop(0)


async def start_gateway(
    users_port: int, auth_port: int, valkey_url: str, port: int | None = None, **settings: str
) -> tuple[asyncio.subprocess.Process, str]:
    port = port or free_port()
    env = {
        "GATEWAY_PORT": str(port),
        "GATEWAY_USERS_TARGET": f"127.0.0.1:{users_port}",
        "GATEWAY_AUTH_TARGET": f"127.0.0.1:{auth_port}",
        "GATEWAY_VALKEY_URL": valkey_url,
        "GATEWAY_RPC_TIMEOUT_S": "20",
        "GATEWAY_RATE_LIMIT_ADDRESS_PER_MINUTE": "0",
        "GATEWAY_RATE_LIMIT_USER_PER_MINUTE": "0",
        **{f"GATEWAY_{name.upper()}": value for name, value in settings.items()},
    }
    process = await spawn("portico_gateway", env)
    await read_until(process, "Application startup complete", within_s=20)
    return process, f"http://127.0.0.1:{port}"


async def slow_patch(
    http: httpx.AsyncClient, slow: httpx.AsyncClient, database_url: str, token: str
) -> tuple[asyncio.Future[httpx.Response], asyncpg.Connection]:
    """A PATCH in flight on ``slow`` (a connection of its own), blocked on a row lock; returns
    it and the connection holding the lock."""
    headers = {"Authorization": f"Bearer {token}"}
    created = await http.post(
        "/v1/users", json={"email": "gw@example.com", "display_name": "G"}, headers=headers
    )
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    locker = await lock_row(database_url, user_id)
    patch = asyncio.ensure_future(
        slow.patch(f"/v1/users/{user_id}", json={"display_name": "H"}, headers=headers)
    )
    await wait_until_blocked(database_url)
    return patch, locker


async def test_sigterm_fails_readiness_first_finishes_in_flight_requests_and_exits_0(
    users_server: RunningServer,
    auth_port: int,
    audit_server: AuditServer,
    valkey_url: str,
    database_url: str,
    tokens: Tokens,
) -> None:
    process, url = await start_gateway(
        users_server.port,
        auth_port,
        valkey_url,
        shutdown_delay_s="1",
        shutdown_grace_s="10",
        audit_target=f"127.0.0.1:{audit_server.port}",
    )
    try:
        async with (
            httpx.AsyncClient(base_url=url, timeout=5) as http,
            httpx.AsyncClient(base_url=url, timeout=30) as slow,
        ):
            assert (await http.get("/readyz")).status_code == 200
            patch, locker = await slow_patch(http, slow, database_url, await tokens.admin())
            try:
                process.send_signal(signal.SIGTERM)
                began = time.monotonic()
                ready = await http.get("/readyz")  # at once: not ready, still answering
                assert ready.status_code == 503, ready.text
                assert ready.json()["detail"] == "shutting down"
                assert (await http.get("/healthz")).status_code == 200
                await asyncio.sleep(max(0.0, began + 1.5 - time.monotonic()))  # delay over
                async with httpx.AsyncClient(base_url=url, timeout=2) as fresh:
                    with pytest.raises(httpx.ConnectError):  # new connections are refused
                        await fresh.get("/healthz")
                assert not patch.done()
            finally:
                await locker.close()
            response = await patch
            assert response.status_code == 200, response.text
            assert response.json()["display_name"] == "H"
        code, rest = await exit_of(process, within_s=10)
    finally:
        kill(process)
    assert code == 0, rest
    assert "Traceback" not in rest


async def test_a_second_sigterm_forces_a_prompt_exit_1(
    users_server: RunningServer, auth_port: int, valkey_url: str, database_url: str, tokens: Tokens
) -> None:
    process, url = await start_gateway(
        users_server.port, auth_port, valkey_url, shutdown_delay_s="0.2", shutdown_grace_s="30"
    )
    try:
        async with (
            httpx.AsyncClient(base_url=url, timeout=5) as http,
            httpx.AsyncClient(base_url=url, timeout=30) as slow,
        ):
            patch, locker = await slow_patch(http, slow, database_url, await tokens.admin())
            try:
                process.send_signal(signal.SIGTERM)
                await read_until(process, "Waiting for", within_s=5)  # draining, 30 s of grace
                assert not patch.done()
                process.send_signal(signal.SIGTERM)
                began = time.monotonic()
                code, rest = await exit_of(process, within_s=5)
                assert time.monotonic() - began < 6  # far within the 30 s of grace
                try:
                    cut = await patch
                except httpx.HTTPError:
                    pass  # cut off
                else:
                    assert cut.status_code >= 500, cut.text  # or answered as failed
            finally:
                await locker.close()
    finally:
        kill(process)
    assert code == 1, rest
    assert "second signal" in rest


def drain(process: asyncio.subprocess.Process) -> asyncio.Task[str]:
    """Read the process's output until it exits (its access log must not fill the pipe)."""
    assert process.stdout is not None
    stdout = process.stdout

    async def read() -> str:
        return (await stdout.read()).decode(errors="replace")

    return asyncio.ensure_future(read())


async def test_without_reuse_port_a_second_gateway_on_the_port_fails_to_start(
    users_server: RunningServer, auth_port: int, valkey_url: str
) -> None:
    first, url = await start_gateway(users_server.port, auth_port, valkey_url)
    port = int(url.rsplit(":", 1)[1])
    try:
        second = await spawn(
            "portico_gateway",
            {"GATEWAY_PORT": str(port), "GATEWAY_VALKEY_URL": valkey_url},
        )
        try:
            code, output = await exit_of(second, within_s=20)
        finally:
            kill(second)
        assert code == 3, output  # uvicorn's STARTUP_FAILURE
        assert "address already in use" in output, output
        assert "Traceback" not in output, output
    finally:
        kill(first)
        await first.wait()


async def test_with_reuse_port_a_new_gateway_takes_over_without_a_refused_connection(
    users_server: RunningServer, auth_port: int, valkey_url: str
) -> None:
    settings = {"reuse_port": "true", "shutdown_delay_s": "0.5", "shutdown_grace_s": "5"}
    old, url = await start_gateway(users_server.port, auth_port, valkey_url, None, **settings)
    old_output = drain(old)
    port = int(url.rsplit(":", 1)[1])
    new: asyncio.subprocess.Process | None = None
    try:
        new, _ = await start_gateway(users_server.port, auth_port, valkey_url, port, **settings)
        new_output = drain(new)
        outcomes: collections.Counter[str] = collections.Counter()
        during_stop = 0  # requests sent between the SIGTERM and the old gateway's exit
        # One request at a time, each on a new connection, from before the SIGTERM until well
        # after the old gateway has exited.
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:

            async def probe() -> None:
                try:
                    reply = await http.get("/healthz", headers={"Connection": "close"})
                    outcomes[str(reply.status_code)] += 1
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1

            for _ in range(20):
                await probe()
            old.send_signal(signal.SIGTERM)
            while old.returncode is None:
                await probe()
                during_stop += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(old.wait(), 0.005)
            for _ in range(20):
                await probe()
        assert await old.wait() == 0, await old_output
        assert new.returncode is None
    finally:
        kill(old)
        if new is not None:
            kill(new)
            await new.wait()
            await new_output
    assert "listening on http://127.0.0.1" in await old_output
    served = outcomes.pop("200", 0)
    # No connection refused: a listener was always there. The old listener drops what sits in
    # its accept queue at the instant it closes; one request at a time, that is one at most.
    assert "ConnectError" not in outcomes, outcomes
    assert sum(outcomes.values()) <= 1, outcomes
    # Requests kept arriving while the old gateway stopped (how many depends on the machine's
    # speed, so only that some did), and every request but that one at most was answered.
    assert during_stop >= 1
    assert served >= 40 + during_stop - 1, (served, during_stop, outcomes)
