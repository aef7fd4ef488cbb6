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
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import REGISTRY, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portico_common.config import get_metrics_settings
from portico_common.metrics import BUCKETS, exemplar

_access = logging.getLogger("portico_gateway.access")

#: Not traced (probes and scrapes would drown the real traffic).
UNTRACED = "/healthz,/readyz,/metrics"


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
    """RED metrics and the access log line, for every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.metrics = http_metrics()
        self.record = get_metrics_settings().enabled  # PORTICO_METRICS_ENABLED
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
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            if in_flight is not None:
                in_flight.dec()
                duration = self._durations.get((route, method, status))
                if duration is None:
                    duration = self.metrics.duration.labels(route, method, str(status))
                    self._durations[route, method, status] = duration
                duration.observe(elapsed, exemplar())
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


def metrics_router() -> APIRouter:
    """``GET /metrics`` in the Prometheus (or OpenMetrics) exposition format."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(REGISTRY), media_type=None, headers={"Content-Type": content_type})

    return router


def instrument(app: FastAPI) -> None:
    """Trace every request (but :data:`UNTRACED`) with OpenTelemetry's ASGI middleware."""
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=UNTRACED, exclude_spans=["receive", "send"]
    )
