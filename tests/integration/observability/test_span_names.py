"""The gateway's server span names: ``METHOD /route/template`` and ``http.route``, as
OpenTelemetry's FastAPI instrumentation names them, for requests that are routed, refused before
routing, or match no route or only a partial one.

The gateway names its span from the route Starlette matched (``portico_gateway.telemetry``),
not from a second match of its own; the expected names here come from the instrumentation's
own function, evaluated on the same request.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from opentelemetry.instrumentation.fastapi import _get_default_span_details
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from portico_gateway.app import create_app
from portico_gateway.config import GatewaySettings

USER_ID = "00000000-0000-4000-8000-000000000000"


def _expected(method: str, path: str) -> tuple[str, str | None]:
    """The instrumentation's (span name, http.route) for ``method path`` on the gateway's routes."""
    app = create_app(GatewaySettings())  # the same routes as the gateway under test
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "headers": [],
        "query_string": b"",
        "app": app,
    }
    name, attributes = _get_default_span_details(scope)
    return name, attributes.get("http.route")


def _server_span(spans: InMemorySpanExporter) -> ReadableSpan:
    server = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER and not s.parent]
    assert len(server) == 1, [(s.name, s.kind) for s in spans.get_finished_spans()]
    return server[0]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", f"/v1/users/{USER_ID}", 404),  # routed: the users service answers NOT_FOUND
        ("GET", "/v1/users/me", 404),  # routed to GetCurrentUser (the token's user is not stored)
        ("GET", "/v1/users", 200),
        ("PATCH", f"/v1/users/{USER_ID}", 400),  # routed, refused by the transcoder: no body
        ("PUT", f"/v1/users/{USER_ID}", 405),  # a partial match
        ("POST", "/v1/users/me", 405),  # partial matches of two templates
        ("HEAD", f"/v1/users/{USER_ID}", 405),
        ("GET", "/v1/auth/token", 405),
        ("GET", "/v1/no-such-route", 404),  # no route: the method alone, no http.route
        ("GET", "/docs", 200),  # a route of an included router
    ],
)
async def test_the_server_span_is_named_as_the_instrumentation_names_it(
    api: httpx.AsyncClient, spans: InMemorySpanExporter, method: str, path: str, status: int
) -> None:
    spans.clear()

    response = await api.request(method, path)

    assert response.status_code == status, response.text
    span = _server_span(spans)
    name, route = _expected(method, path)
    assert span.name == name
    assert (span.attributes or {}).get("http.route") == route


async def test_a_routed_request_has_the_route_template_as_name_and_http_route(
    api: httpx.AsyncClient, spans: InMemorySpanExporter
) -> None:
    spans.clear()

    await api.get(f"/v1/users/{USER_ID}")

    span = _server_span(spans)
    assert span.name == "GET /v1/users/{id}"
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/v1/users/{id}"


async def test_a_request_refused_before_routing_still_gets_its_route_name(
    api: httpx.AsyncClient, spans: InMemorySpanExporter
) -> None:
    spans.clear()

    # Over the body limit: the gateway refuses it (413) before any route runs.
    response = await api.post("/v1/users", content=b"x" * 2_000_000)

    assert response.status_code == 413
    span = _server_span(spans)
    assert (span.name, (span.attributes or {}).get("http.route")) == _expected("POST", "/v1/users")
    assert span.name == "POST /v1/users"


async def test_probes_are_not_traced(api: httpx.AsyncClient, spans: InMemorySpanExporter) -> None:
    spans.clear()

    await api.get("/healthz")

    assert not [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
