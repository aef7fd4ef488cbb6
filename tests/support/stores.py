"""Least privilege in the tests: each server connects as its own PostgreSQL role and Valkey user.

The integration fixtures (``tests/integration/conftest.py``) create the login roles the dev
launcher creates (:mod:`portico_devstack.roles`) with the passwords below, once per run; the
settings helpers (``tests.support.users`` and the others) hand each server the DSN of its own
role, so every test runs with the grants production has. The test itself keeps the owner's DSN
(``database_url``) to arrange and inspect data. Valkey likewise: the embedded server starts with
the components' ACL users (:mod:`portico_devstack.valkey_acl`), ``valkey_url`` is the admin's,
and the helpers hand each server its component's URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import valkey.asyncio as valkey_asyncio

from portico_devstack import valkey_acl
from portico_devstack.roles import new_passwords, service_dsn

#: The run's login-role passwords, one per service (roles are cluster-wide, so one set per run).
SERVICE_PASSWORDS = new_passwords()


def service_database_url(database_url: str, service: str) -> str:
    """``database_url`` (the owner's) as ``service``'s own login role."""
    return service_dsn(database_url, service, SERVICE_PASSWORDS[service])


#: The run's Valkey passwords, one per component and the admin's (the fixtures' own user).
VALKEY_PASSWORDS = valkey_acl.new_passwords()


def component_valkey_url(valkey_url: str, component: str) -> str:
    """``valkey_url`` (the admin's) as ``component``'s own ACL user."""
    return valkey_acl.user_url(valkey_url, component, VALKEY_PASSWORDS[component])


@asynccontextmanager
async def valkey_client(url: str) -> AsyncIterator[Any]:
    """A client of the Valkey at ``url`` (any user), closed on the way out."""
    client: Any = valkey_asyncio.from_url(url)  # type: ignore[no-untyped-call]
    try:
        yield client
    finally:
        await client.aclose()
