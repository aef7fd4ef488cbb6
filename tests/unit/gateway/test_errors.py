"""``problem()`` names the request's trace when there is one, and only then."""

from __future__ import annotations

import json

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from starlette.requests import Request

from portico_gateway.errors import problem

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736


def _request() -> Request:
    return Request({"type": "http", "method": "GET", "path": "/v1/users/x", "headers": []})


def _body(request: Request) -> dict[str, object]:
    response = problem(request, status=404, detail="no such user")
    body: dict[str, object] = json.loads(bytes(response.body))
    return body


def test_a_problem_inside_a_span_carries_its_trace_id() -> None:
    context = SpanContext(TRACE_ID, 0x00F067AA0BA902B7, is_remote=False, trace_flags=TraceFlags(1))
    with trace.use_span(NonRecordingSpan(context)):
        body = _body(_request())
    assert body["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert body["status"] == 404


def test_a_problem_outside_any_span_has_no_trace_id() -> None:
    assert "trace_id" not in _body(_request())
