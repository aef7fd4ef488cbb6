"""``problem()`` names the request's trace when there is one, and only then; upstream statuses
become the HTTP answers their cause deserves."""

from __future__ import annotations

import json

import grpc
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from starlette.requests import Request

from portico_gateway.errors import problem, upstream_problem

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


def test_an_upstream_cancelled_is_a_retryable_503_not_a_client_closed_request() -> None:
    """A stopping gRPC server cancels the calls it received but had not started (grpc/grpc#41785);
    the client closed nothing, so the answer is 503 with Retry-After, as for UNAVAILABLE."""
    error = grpc.aio.AioRpcError(
        grpc.StatusCode.CANCELLED, grpc.aio.Metadata(), grpc.aio.Metadata(), "CANCELLED"
    )
    response = upstream_problem(_request(), error, retry_after_s=2)
    body = json.loads(bytes(response.body))
    assert response.status_code == body["status"] == 503
    assert response.headers["Retry-After"] == "2"
    assert body["type"].endswith("/unavailable")
