"""Tracing for this package's tests: the real ``setup_telemetry`` with an in-memory exporter.

The tracer provider is process-global and can be installed only once, so the exporter is
session-scoped and emptied before each test; asyncpg's patching is undone at the end.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from portico_common.config import TelemetrySettings
from portico_common.logs import JsonFormatter
from portico_common.telemetry import setup_telemetry
from portico_users.server import RunningServer
from tests.support.gateway import gateway_client
from tests.support.tokens import Tokens


@pytest.fixture(scope="session")
def span_exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    settings = TelemetrySettings(
        exporter_otlp_endpoint="", propagators="tracecontext,baggage,b3multi"
    )
    setup_telemetry(
        settings,
        service_name="portico-tests",
        span_processors=[SimpleSpanProcessor(exporter)],
        instrument_asyncpg=True,
    )
    yield exporter
    AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
    exporter.clear()


@pytest.fixture
def spans(span_exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    span_exporter.clear()
    return span_exporter


class JsonLog:
    """Every record logged during a test, formatted by the real JSON formatter."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]


@pytest.fixture
def json_log(caplog: pytest.LogCaptureFixture) -> Iterator[JsonLog]:
    caplog.set_level(logging.INFO)
    log = JsonLog()
    handler = logging.StreamHandler(log.stream)
    handler.setFormatter(JsonFormatter("portico-tests"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield log
    finally:
        root.removeHandler(handler)


@pytest.fixture
async def api(
    spans: InMemorySpanExporter, users_server: RunningServer, valkey_url: str, tokens: Tokens
) -> AsyncIterator[httpx.AsyncClient]:
    """The real gateway (in-process ASGI) in front of the real users service, as an admin."""
    async with gateway_client(
        users_port=users_server.port, valkey_url=valkey_url, token=await tokens.admin()
    ) as client:
        yield client
