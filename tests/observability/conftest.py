"""Fixtures for the tests of ``observability/`` (unit tier: configuration files, no servers)."""

from __future__ import annotations

import pytest

from tests.observability.catalog import promtool


@pytest.fixture
def needs_promtool() -> None:
    """Skip when promtool is missing (``make obs-check``, part of ``make test``, installs it)."""
    if promtool() is None:
        pytest.skip("promtool is missing: `make obs-check` installs it (Debian package prometheus)")
