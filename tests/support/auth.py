"""Helpers for the auth service's integration tests: settings and small database probes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr

from portico_auth.config import (
    Argon2Settings,
    AuthSettings,
    PostgresSettings,
    SignUpSettings,
    ValkeySettings,
)
from portico_auth.server import RunningServer, start
from tests.support.stores import component_valkey_url, service_database_url
from tests.support.timeouts import (
    POSTGRES_CONNECT_TIMEOUT_S,
    USERS_CALL_TIMEOUT_S,
    VALKEY_TIMEOUT_S,
)

#: The gateway's proof to the auth service (``portico_common.forwarding``): every in-process
#: auth server accepts it and every in-process gateway sends it, as in ``make run``.
FORWARDER_KEY = "tests-forwarder-key-0123456789abcdefghijklmnop"


def as_the_gateway(chain: str) -> tuple[tuple[str, str], ...]:
    """The metadata of a call the gateway makes for a client whose ``x-forwarded-for`` is
    ``chain`` (the gateway's own entry last), with the gateway's forwarder key."""
    return (("x-forwarded-for", chain), ("x-portico-forwarder", FORWARDER_KEY))


#: argon2id parameters small enough for a fast suite (production uses the defaults).
FAST_ARGON2 = Argon2Settings(time_cost=1, memory_cost_kib=1024, parallelism=1)


def auth_settings(
    *,
    database_url: str,
    valkey_url: str,
    users_target: str,
    key_files: list[Path],
    **overrides: Any,
) -> AuthSettings:
    """Settings for an in-process server on an ephemeral loopback port, with fast probes."""
    values: dict[str, Any] = {
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": 0,  # no metrics HTTP server (tests that want one pass a port)
        "users_target": users_target,
        "signing_key_files": key_files,
        "shutdown_grace_s": 2.0,
        "health_check_interval_s": 0.2,
        "postgres": PostgresSettings(
            dsn=SecretStr(service_database_url(database_url, "auth")),
            connect_timeout_s=POSTGRES_CONNECT_TIMEOUT_S,
            query_timeout_s=5.0,
        ),
        "valkey": ValkeySettings(
            url=SecretStr(component_valkey_url(valkey_url, "auth")),
            socket_timeout_s=VALKEY_TIMEOUT_S,
            socket_connect_timeout_s=VALKEY_TIMEOUT_S,
        ),
        "argon2": FAST_ARGON2,
        "forwarder_keys": [SecretStr(FORWARDER_KEY)],
        "signup": SignUpSettings(users_timeout_s=USERS_CALL_TIMEOUT_S, reconcile_interval_s=3600.0),
    }
    values.update(overrides)
    return AuthSettings(**values)


@asynccontextmanager
async def running_auth(
    *, database_url: str, valkey_url: str, users_port: int, key_file: Path, **overrides: Any
) -> AsyncIterator[RunningServer]:
    """A real auth server (:func:`auth_settings` with ``overrides``), stopped on exit."""
    settings = auth_settings(
        database_url=database_url,
        valkey_url=valkey_url,
        users_target=f"127.0.0.1:{users_port}",
        key_files=[key_file],
        **overrides,
    )
    running = await start(settings)
    try:
        yield running
    finally:
        await running.stop(0)


async def rows(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of one query on the test's database."""
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def users_and_credentials(database_url: str) -> tuple[set[str], dict[str, str | None]]:
    """Every user id, and every credential as {email: user id or None (pending)}."""
    users = {str(r["id"]) for r in await rows(database_url, "SELECT id FROM users.users")}
    credentials = {
        r["email"]: (str(r["user_id"]) if r["user_id"] else None)
        for r in await rows(database_url, "SELECT email, user_id FROM auth.credentials")
    }
    return users, credentials
