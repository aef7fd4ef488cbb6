"""PostgreSQL login roles for the services, for the local stack and the tests.

The migrations create one NOLOGIN group role per service (``portico_users``, ``portico_auth``,
``portico_audit``) with grants on that service's own tables only. Which login role a process
connects as, and its password, is per environment: in Kubernetes CloudNativePG manages
``portico_<service>_app`` (``k8s/base/postgres/cluster.yaml``); here :func:`ensure_login_roles`
creates the same roles, as members of their groups, with passwords generated for this run. The
migrations keep running as the database owner. See docs/data-stores.md.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

#: The services that connect to PostgreSQL, each with a group role made by its migrations.
SERVICES = ("users", "auth", "audit")


def group_role(service: str) -> str:
    """The NOLOGIN role the migrations grant ``service``'s tables to."""
    return f"portico_{service}"


def login_role(service: str) -> str:
    """The role ``service`` logs in as (a member of :func:`group_role`)."""
    return f"portico_{service}_app"


def new_passwords() -> dict[str, str]:
    """A fresh random password per service (hex: safe in a URL as it is)."""
    return {service: secrets.token_hex(24) for service in SERVICES}


async def ensure_login_roles(owner_dsn: str, passwords: Mapping[str, str]) -> None:
    """Create (or update) each service's login role with its password, in its group.

    ``owner_dsn`` needs CREATEROLE (a superuser in the embedded server). Idempotent; roles are
    cluster-wide, so one call serves every database of the server. The group roles must exist
    (the migrations make them).
    """
    conn = await asyncpg.connect(owner_dsn)
    try:
        for service, password in passwords.items():
            login, group = login_role(service), group_role(service)
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", login
            )
            verb = "ALTER ROLE %I WITH" if exists else "CREATE ROLE %I WITH"
            # DDL takes no bind parameters: format() quotes the name and the password server-side.
            statement = await conn.fetchval(
                f"SELECT format('{verb} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                "INHERIT PASSWORD %L', $1::text, $2::text)",
                login,
                password,
            )
            await conn.execute(statement)
            await conn.execute(
                await conn.fetchval(
                    "SELECT format('GRANT %I TO %I', $1::text, $2::text)", group, login
                )
            )
    finally:
        await conn.close()


def service_dsn(dsn: str, service: str, password: str) -> str:
    """``dsn`` with its user and password replaced by ``service``'s login role."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    userinfo = f"{quote(login_role(service), safe='')}:{quote(password, safe='')}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))
