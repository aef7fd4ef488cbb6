"""PORTICO_METRICS_ENABLED: request metrics can be switched off to price them (bench)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from portico_common.config import get_metrics_settings
from portico_common.metrics import ClientMetricsInterceptor, ServerMetricsInterceptor
from portico_common.telemetry import client_interceptors, server_interceptors


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    get_metrics_settings.cache_clear()
    yield
    get_metrics_settings.cache_clear()


def test_metrics_are_on_by_default() -> None:
    assert any(isinstance(i, ServerMetricsInterceptor) for i in server_interceptors())
    assert any(isinstance(i, ClientMetricsInterceptor) for i in client_interceptors())


def test_metrics_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The span interceptors stay, the RED ones go."""
    monkeypatch.setenv("PORTICO_METRICS_ENABLED", "false")
    server, client = server_interceptors(), client_interceptors()
    assert server  # the server span is still there
    assert not any(isinstance(i, ServerMetricsInterceptor) for i in server)
    assert not any(isinstance(i, ClientMetricsInterceptor) for i in client)
