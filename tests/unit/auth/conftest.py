"""Unit tests of the auth service start from an environment without ``AUTH_*`` variables."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_auth_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AUTH_"):
            monkeypatch.delenv(name)
