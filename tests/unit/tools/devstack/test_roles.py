"""The services' login roles: names agree with the migrations, DSNs keep everything but the user."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from portico_devstack.roles import SERVICES, login_role, new_passwords, service_dsn


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "postgresql://postgres@/postgres?host=/run/pg%20data&port=5432",
            "postgresql://portico_users_app:pw@/postgres?host=/run/pg%20data&port=5432",
        ),
        (
            "postgresql://portico:s%40cret@db.example:5432/portico?sslmode=require",
            "postgresql://portico_users_app:pw@db.example:5432/portico?sslmode=require",
        ),
        ("postgresql:///portico?host=/tmp", "postgresql://portico_users_app:pw@/portico?host=/tmp"),
    ],
)
def test_a_service_dsn_replaces_only_the_user_and_password(dsn: str, expected: str) -> None:
    assert service_dsn(dsn, "users", "pw") == expected


def test_passwords_are_url_safe_and_differ_per_service() -> None:
    passwords = new_passwords()
    assert set(passwords) == set(SERVICES)
    assert len(set(passwords.values())) == len(SERVICES)
    for service, password in passwords.items():
        parts = urlsplit(service_dsn("postgresql://o@h/d", service, password))
        assert (parts.username, parts.password) == (login_role(service), password)
