"""The gateway's telemetry: HTTP RED metrics + one access-log line per request, ``/metrics``,
and FastAPI tracing.

* :class:`AccessMiddleware` (pure ASGI) times every HTTP request and records
  ``portico_http_server_duration_seconds{route,method,status}`` (``route`` is the matched route
  *template*, e.g. ``/v1/users/{user_id}``, or ``unmatched``, so raw ids never become labels),
  ``portico_http_server_in_flight_requests{method}``, and logs one ``access`` line with
  ``method``, ``route``, ``status``, ``duration_ms`` (uvicorn's own access log is off).
* ``GET /metrics`` is a gateway-owned route, left out of the OpenAPI document: Prometheus text,
  or OpenMetrics (with trace-id exemplars) when the scraper asks for it in ``Accept``.
* :func:`instrument` adds OpenTelemetry's ASGI middleware outermost (server spans named after
  the route template; health and metrics are not traced).

Naming the server span: OpenTelemetry's FastAPI instrumentation names it when the request
arrives, before routing, so it matches the path against every route itself, and then Starlette
matches it again to route it: two matches per request (39 µs of CPU for ``GET /v1/users/{id}``
on the gateway's 16 routes, against 4 µs for what replaces it). Here the span starts with the
method alone (:func:`span_details`, no route), and :class:`AccessMiddleware` names it when the
response starts (the span ends with its last body), from the route Starlette chose
(``scope["route"]``, :func:`name_server_span`): the exported name and ``http.route`` are the
instrumentation's own (``GET /v1/users/{id}``). Only requests that did not reach a route
(refused by a middleware first, 404) or matched one only partially (405) are matched the
instrumentation's way, to name them exactly as it would. Samplers and ``on_start`` processors
see the method-only name; the parent-based and ratio samplers used here do not look at names.
The instrumentation's own HTTP metrics would lose ``http.route``: no OpenTelemetry meter
provider is installed (the RED metrics above are Prometheus's).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware, asgi_getter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor, _get_route_details
from opentelemetry.propagate import extract
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE
from opentelemetry.trace import Span
from opentelemetry.util.http import sanitize_method
from prometheus_client import REGISTRY, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portico_common.config import get_metrics_settings
from portico_common.metrics import BUCKETS, exemplar
from portico_common.tail_capture import TailCapture
from portico_common.telemetry import tail_capture
from portico_gateway.edge import edge_metrics

_access = logging.getLogger("portico_gateway.access")

#: Not traced (probes and scrapes would drown the real traffic).
UNTRACED = "/healthz,/readyz,/metrics"
#: Where the request's server span waits in the ASGI scope for its name (set while it starts).
_SERVER_SPAN = "portico.server_span"


@dataclass(frozen=True)
class HttpMetrics:
    duration: Histogram
    in_flight: Gauge


@functools.cache
def http_metrics() -> HttpMetrics:
    """The HTTP RED metrics (created once per process, in the default registry)."""
    return HttpMetrics(
        duration=Histogram(
            "portico_http_server_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status.",
            ["route", "method", "status"],
            buckets=BUCKETS,
        ),
        in_flight=Gauge(
            "portico_http_server_in_flight_requests", "HTTP requests being handled now.", ["method"]
        ),
    )


class AccessMiddleware:
    """RED metrics and the access log line, for every HTTP request; and the tail capture's span
    for a request whose trace was not sampled that answered 5xx or took longer than ``slow_s``
    (0: never; :mod:`portico_common.tail_capture`)."""

    def __init__(self, app: ASGIApp, *, slow_s: float = 0.0) -> None:
        self.app = app
        self.metrics = http_metrics()
        self.record = get_metrics_settings().enabled  # PORTICO_METRICS_ENABLED
        self.capture = tail_capture()
        self.slow_s = slow_s if slow_s > 0 else float("inf")
        # Labelled children by label values: ``labels()`` takes a lock and builds a key each
        # time. Routes are templates, so these stay as small as the metrics themselves.
        self._in_flight: dict[str, Any] = {}
        self._durations: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        method: str = scope["method"]
        in_flight = self._in_flight.get(method) if self.record else None
        if in_flight is None and self.record:
            in_flight = self._in_flight[method] = self.metrics.in_flight.labels(method)
        if in_flight is not None:
            in_flight.inc()
        status = 500  # an exception before the response started ends as a 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                name_server_span(scope)  # before the span ends, with the response's last body
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - start
            name_server_span(scope)  # no response started: an exception on its way out
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            if in_flight is not None:
                in_flight.dec()
                duration = self._durations.get((route, method, status))
                if duration is None:
                    duration = self.metrics.duration.labels(route, method, str(status))
                    self._durations[route, method, status] = duration
                duration.observe(elapsed, exemplar())
            if self.capture is not None and (status >= 500 or elapsed > self.slow_s):
                _capture_request(self.capture, scope, route, status, elapsed)
            _access.info(
                "%s %s %d",
                method,
                route,
                status,
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )


def _capture_request(
    capture: TailCapture, scope: Scope, route: str, status: int, elapsed: float
) -> None:
    """The tail capture's span of one request (the rare path: failed or slow requests only)."""
    if not scope["path"].startswith("/v1/") and not scope["path"].startswith("/.well-known/"):
        return  # the API routes only, as the SLOs count them: not probes, /metrics or docs
    headers: dict[str, Any] = {"headers": scope.get("headers", [])}  # what asgi_getter reads
    caller = trace.get_current_span(extract(headers, getter=asgi_getter)).get_span_context()
    name, attributes = span_details(scope, None if route == "unmatched" else route)
    capture.emit(
        request=trace.get_current_span().get_span_context(),
        parent=caller,
        name=name,
        kind=trace.SpanKind.SERVER,
        elapsed_s=elapsed,
        reason="error" if status >= 500 else "slow",
        attributes={
            **attributes,
            "http.request.method": str(scope.get("method", "")),
            "url.path": str(scope.get("path", "")),
            "http.response.status_code": status,
        },
        error=f"HTTP {status}",
    )


def _live_tasks() -> float:
    """asyncio tasks alive in this thread's loop (0 outside one: a scrape from elsewhere)."""
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:
        return 0.0


@functools.cache
def task_gauge() -> Gauge:
    """``portico_gateway_asyncio_tasks``, counted when scraped (created once per process)."""
    gauge = Gauge("portico_gateway_asyncio_tasks", "asyncio tasks alive in the gateway process.")
    gauge.set_function(_live_tasks)
    return gauge


def metrics_router() -> APIRouter:
    """``GET /metrics`` in the Prometheus (or OpenMetrics) exposition format, with the count of
    live asyncio tasks (:func:`task_gauge`): steady under steady load, so growth is a leak."""
    router = APIRouter()
    task_gauge()
    edge_metrics()  # the connections' metrics, exposed (at 0) before uvicorn's first connection

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(REGISTRY), media_type=None, headers={"Content-Type": content_type})

    return router


def span_details(scope: Scope, route: str | None = None) -> tuple[str, dict[str, str]]:
    """Span name and attributes for a request to ``route``, as the FastAPI instrumentation has them.

    ``GET /v1/users/{id}`` and ``http.route``; the method alone (no attribute) without a route.
    As the OpenTelemetry middleware's ``default_span_details`` (no route: the request is not
    routed yet), it costs no route matching.
    """
    method = sanitize_method(str(scope.get("method", "")).strip())
    if method == "_OTHER":
        method = "HTTP"
    if not route:
        return method or "", {}
    return (f"{method} {route}" if method else route), {HTTP_ROUTE: route}


def _keep_server_span(span: Span, scope: Scope) -> None:
    """The instrumentation's ``server_request_hook``: remember the request's span for its name."""
    if span.is_recording():
        scope[_SERVER_SPAN] = span


def name_server_span(scope: Scope) -> None:
    """Name the request's server span after the route template Starlette matched.

    Called by :class:`AccessMiddleware` when the response starts, or when the request fails
    without one: routing is over and the span still open (it ends with the last body). A route
    that matched fully is the one the instrumentation would find; otherwise (no route reached,
    or a partial match: 405) the path is matched as the instrumentation does.
    """
    span: Span | None = scope.pop(_SERVER_SPAN, None)
    if span is None:  # not traced (UNTRACED, tracing off, not sampled)
        return
    route = scope.get("route")
    if isinstance(route, Route) and (route.methods is None or scope["method"] in route.methods):
        path: str | None = route.path
    else:
        path = _get_route_details(scope)
    if path:
        name, attributes = span_details(scope, path)
        span.update_name(name)
        span.set_attributes(attributes)


def instrument(app: FastAPI) -> None:
    """Trace every request (but :data:`UNTRACED`) with OpenTelemetry's ASGI middleware.

    Its span gets its route name from :func:`name_server_span`, not from a route match of its
    own (:func:`span_details` replaces the instrumentation's ``default_span_details``).
    """
    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls=UNTRACED,
        exclude_spans=["receive", "send"],
        server_request_hook=_keep_server_span,
    )
    build_instrumented = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        stack = build_instrumented()
        # The instrumentation builds ServerErrorMiddleware(OpenTelemetryMiddleware(...)).
        otel = getattr(stack, "app", None)
        if isinstance(otel, OpenTelemetryMiddleware):
            otel.default_span_details = span_details
        return stack

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
