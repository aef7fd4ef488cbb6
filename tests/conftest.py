"""Test-wide settings: every test starts from an environment without Portico settings.

Components read their settings from the environment (``USERS_*``, ``GATEWAY_*``, ``OTEL_*``,
``DATABASE_URL`` …). A developer's shell or ``.env`` must not leak into tests, so those variables
are removed for each test (httpx's ``clean_environ`` idea); tests build settings objects explicitly
instead.
Backend selection variables (``TEST_*``, ``PORTICO_TEST_BACKEND``, ``PORTICO_E2E_BASE_URL``) are
read once by session fixtures before this runs and are left alone.
"""

from __future__ import annotations

import os

import pytest

_PREFIXES = ("USERS_", "AUTH_", "GATEWAY_", "MIGRATE_", "PORTICO_DEV_", "PORTICO_METRICS_", "OTEL_")
_NAMES = ("DATABASE_URL", "VALKEY_URL")


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(_PREFIXES) or name in _NAMES:
            monkeypatch.delenv(name)
