"""Least privilege in the tests: each service's server connects as its own PostgreSQL role.

The integration fixtures (``tests/integration/conftest.py``) create the login roles the dev
launcher creates (:mod:`portico_devstack.roles`) with the passwords below, once per run; the
settings helpers (``tests.support.users`` and the others) hand each server the DSN of its own
role, so every test runs with the grants production has. The test itself keeps the owner's DSN
(``database_url``) to arrange and inspect data.
"""

from __future__ import annotations

from portico_devstack.roles import new_passwords, service_dsn

#: The run's login-role passwords, one per service (roles are cluster-wide, so one set per run).
SERVICE_PASSWORDS = new_passwords()


def service_database_url(database_url: str, service: str) -> str:
    """``database_url`` (the owner's) as ``service``'s own login role."""
    return service_dsn(database_url, service, SERVICE_PASSWORDS[service])
