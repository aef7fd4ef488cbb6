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
import shutil
import tempfile

import pytest

_PREFIXES = ("USERS_", "AUTH_", "GATEWAY_", "MIGRATE_", "PORTICO_DEV_", "PORTICO_METRICS_", "OTEL_")
_NAMES = ("DATABASE_URL", "VALKEY_URL")


_OWN_BASETEMP = pytest.StashKey[str]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Give each run a temporary root of its own (unless ``--basetemp`` is given).

    pytest's default root, ``/tmp/pytest-of-<user>/pytest-<n>``, keeps only the newest three
    runs and deletes older ones, even while they are still running; the embedded PostgreSQL and
    Valkey of a run keep their data there, so a second pytest started on the same machine (another
    checkout, a tier run by hand) would kill the first run's servers. A ``mkdtemp`` root is never
    rotated; it is removed after a run that passed and kept (and named) after one that failed.
    """
    if config.option.basetemp is None:
        root = tempfile.mkdtemp(prefix="portico-pytest-")
        config.option.basetemp = root
        config.stash[_OWN_BASETEMP] = root


@pytest.hookimpl(trylast=True)  # after session fixtures (embedded servers) are torn down
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    root = session.config.stash.get(_OWN_BASETEMP, None)
    if root is not None and exitstatus == 0:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(_PREFIXES) or name in _NAMES:
            monkeypatch.delenv(name)
