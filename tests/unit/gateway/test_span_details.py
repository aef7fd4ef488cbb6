"""The server span starts without a route match; its name comes from the route routing chose.

tests/integration/observability/test_span_names.py checks the exported names end to end.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.fastapi import _get_default_span_details

from portico_gateway.telemetry import span_details
from tests.unit.gateway.conftest import gateway_app, settings_for


def _scope(method: str, path: str, app: FastAPI | None = None) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "app": app}


def test_the_instrumentation_names_spans_without_matching_routes() -> None:
    app = gateway_app(settings_for("127.0.0.1:1"))

    stack = app.build_middleware_stack()

    otel = stack.app  # type: ignore[attr-defined]
    assert isinstance(otel, OpenTelemetryMiddleware)
    assert otel.default_span_details is span_details


@pytest.mark.parametrize("method", ["GET", "post", "PATCH", "BREW", ""])
def test_without_a_route_the_name_is_the_instrumentations(method: str) -> None:
    app = FastAPI()  # no routes: the instrumentation finds none either
    scope = _scope(method, "/v1/anything", app)

    assert span_details(scope) == _get_default_span_details(scope)


def test_with_a_route_the_name_and_http_route_are_the_instrumentations() -> None:
    app = gateway_app(settings_for("127.0.0.1:1"))
    scope = _scope("GET", "/v1/users/42", app)

    assert span_details(scope, "/v1/users/{id}") == _get_default_span_details(scope)
    assert span_details(scope, "/v1/users/{id}") == (
        "GET /v1/users/{id}",
        {"http.route": "/v1/users/{id}"},
    )
