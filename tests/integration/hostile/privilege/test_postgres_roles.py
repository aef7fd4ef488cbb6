"""A compromised service reaches only its own tables: one PostgreSQL role per service.

Every service used to connect as the database owner, so one service's stolen DSN (or an
injection in its SQL) could read password hashes, rewrite users or erase the audit log (issue
14, item 9). Each now logs in as ``portico_<service>_app``, a member of the group its migrations
grant its own tables to; the test fixtures make the same roles the dev launcher makes. Here each
role tries what its service must never do, on the real migrated database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import asyncpg
import pytest

from tests.support.stores import service_database_url

Connect = Callable[[str], AbstractAsyncContextManager[asyncpg.Connection]]

#: Each service's own tables, and what it may do to them.
OWN = {
    "users": {"users.users": "rw", "users.outbox": "rw"},
    "auth": {"auth.credentials": "rw", "auth.outbox": "rw"},
    "audit": {"audit.events": "append"},
}
TABLES = [table for tables in OWN.values() for table in tables]


@pytest.fixture
def connect_as(database_url: str) -> Connect:
    """A connection to the test's database as one service's login role."""

    @asynccontextmanager
    async def connect(service: str) -> AsyncIterator[asyncpg.Connection]:
        conn = await asyncpg.connect(service_database_url(database_url, service))
        try:
            yield conn
        finally:
            await conn.close()

    return connect


@pytest.mark.parametrize("service", sorted(OWN))
async def test_a_service_role_cannot_read_another_services_tables(
    connect_as: Connect, service: str
) -> None:
    async with connect_as(service) as conn:
        assert await conn.fetchval("SELECT current_user") == f"portico_{service}_app"
        for table in TABLES:
            if table in OWN[service]:
                await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608 (fixed names)
                continue
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608


async def test_the_users_role_cannot_read_password_hashes(connect_as: Connect) -> None:
    async with connect_as("users") as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT email, password_hash FROM auth.credentials")


async def test_the_audit_role_cannot_write_users(connect_as: Connect) -> None:
    async with connect_as("audit") as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO users.users (email, display_name) VALUES ('x@example.com', 'X')"
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE users.users SET display_name = 'owned'")


async def test_the_audit_log_is_append_only_for_its_own_service(
    connect_as: Connect, database_url: str
) -> None:
    owner = await asyncpg.connect(database_url)
    try:
        await owner.execute(
            "INSERT INTO audit.events (id, type, subject, occurred_at) "
            "VALUES (gen_random_uuid(), 'user.created', 'u1', now())"
        )
    finally:
        await owner.close()
    async with connect_as("audit") as conn:
        await conn.execute(
            "INSERT INTO audit.events (id, type, subject, occurred_at) "
            "VALUES (gen_random_uuid(), 'user.updated', 'u1', now())"
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM audit.events")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE audit.events SET subject = 'someone else'")
        assert await conn.fetchval("SELECT count(*) FROM audit.events") == 2


@pytest.mark.parametrize("service", sorted(OWN))
async def test_a_service_role_cannot_change_the_schema_or_read_the_migrations(
    connect_as: Connect, service: str
) -> None:
    async with connect_as(service) as conn:
        for ddl in (
            f"CREATE TABLE {service}.planted (id int)",
            "CREATE TABLE public.planted (id int)",
            f"DROP TABLE {next(iter(OWN[service]))}",
            "CREATE SCHEMA planted",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(ddl)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM portico_migrations.applied")
