"""Tail capture: a request head sampling dropped still reaches the trace sink when it failed or
was slow, with its own trace id; a fast, successful one leaves no span at all.

The requests carry a ``traceparent`` whose sampled flag is off, so the parent-based sampler
(the production one) drops them in the gateway and, following it, in the users service: what
production does with the traces its ratio leaves out. "Slow" is made deterministic by the
thresholds (``trace_slow_s``), not by sleeping: a nanosecond makes every request slow, an hour
none.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from portico_common.tail_capture import CAPTURE_ATTRIBUTE
from portico_common.telemetry import server_interceptors
from portico_users.server import RunningServer, start
from tests.support.gateway import gateway_client
from tests.support.tokens import Tokens
from tests.support.users import users_settings

GET_USER = "/portico.users.v1.UserService/GetUser"
EVERYTHING_IS_SLOW = 1e-9
NOTHING_IS_SLOW = 3600.0


def _unsampled_parent() -> tuple[int, int, str]:
    """A caller's trace and span id, and its ``traceparent`` with the sampled flag off."""
    trace_id, span_id = secrets.randbits(128) | 1, secrets.randbits(64) | 1
    return trace_id, span_id, f"00-{trace_id:032x}-{span_id:016x}-00"


async def _wait_for(
    spans: InMemorySpanExporter, found: Callable[[list[ReadableSpan]], bool]
) -> list[ReadableSpan]:
    """The finished spans once ``found`` holds (a service ends its span just after answering)."""
    for _ in range(400):
        finished = list(spans.get_finished_spans())
        if found(finished):
            return finished
        await asyncio.sleep(0.025)
    return list(spans.get_finished_spans())


@pytest.fixture
async def slow_users(
    spans: InMemorySpanExporter, database_url: str, valkey_url: str
) -> AsyncIterator[RunningServer]:
    """A users service for which every call is over its latency threshold."""
    running = await start(
        users_settings(
            database_url=database_url, valkey_url=valkey_url, trace_slow_s=EVERYTHING_IS_SLOW
        )
    )
    try:
        yield running
    finally:
        await running.stop(0)


async def _gateway(
    users_port: int, valkey_url: str, tokens: Tokens, *, slow_s: float
) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    """The real gateway in front of ``users_port``, as the admin, with ``slow_s`` as threshold.

    Its edge path is off: every read goes through the users service, whose spans these tests
    follow (a second read would otherwise be answered by the gateway from the cache).
    """
    return gateway_client(
        users_port=users_port,
        valkey_url=valkey_url,
        token=await tokens.admin(),
        trace_slow_s=slow_s,
        edge_reads=False,
    )


async def _unsampled_get_of_a_new_user(
    api: httpx.AsyncClient, spans: InMemorySpanExporter
) -> tuple[httpx.Response, int, int, str]:
    """Create a user, forget the spans so far, GET the user in an unsampled trace: the answer,
    the trace id and the caller's span id, and the user's id."""
    created = await api.post(
        "/v1/users", json={"email": f"tail-{secrets.token_hex(4)}@example.com", "display_name": "T"}
    )
    assert created.status_code == 201, created.text
    user_id = str(created.json()["id"])
    spans.clear()
    trace_id, caller_span_id, traceparent = _unsampled_parent()
    answer = await api.get(f"/v1/users/{user_id}", headers={"traceparent": traceparent})
    return answer, trace_id, caller_span_id, user_id


async def test_an_unsampled_slow_request_reaches_the_sink_from_gateway_and_service(
    spans: InMemorySpanExporter, slow_users: RunningServer, valkey_url: str, tokens: Tokens
) -> None:
    async with await _gateway(
        slow_users.port, valkey_url, tokens, slow_s=EVERYTHING_IS_SLOW
    ) as api:
        answer, trace_id, caller_span_id, _ = await _unsampled_get_of_a_new_user(api, spans)

    assert answer.status_code == 200
    finished = await _wait_for(
        spans, lambda s: any(x.kind == SpanKind.SERVER and x.name == GET_USER for x in s)
    )
    # Nothing but the captured spans: the request itself was not sampled anywhere.
    assert {s.attributes.get(CAPTURE_ATTRIBUTE) for s in finished if s.attributes} == {"slow"}
    gateway = [s for s in finished if s.name == "GET /v1/users/{id}"]
    service = [s for s in finished if s.name == GET_USER]
    assert len(gateway) == 1, [s.name for s in finished]
    assert len(service) == 1, [s.name for s in finished]
    for span in (gateway[0], service[0]):
        assert span.kind == SpanKind.SERVER
        assert span.context is not None
        assert span.context.trace_id == trace_id  # the propagated trace, not a new one
        assert span.context.trace_flags.sampled
        assert span.status.status_code != StatusCode.ERROR
        assert span.start_time is not None
        assert span.end_time is not None
        assert span.start_time < span.end_time
    assert gateway[0].parent is not None
    assert gateway[0].parent.span_id == caller_span_id
    assert gateway[0].attributes is not None
    assert gateway[0].attributes["http.response.status_code"] == 200
    assert gateway[0].attributes["http.route"] == "/v1/users/{id}"
    assert service[0].attributes is not None
    assert service[0].attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]
    assert service[0].parent is not None  # the gateway's (unsampled) client span
    # The service's span is inside the gateway's.
    assert gateway[0].start_time is not None
    assert service[0].start_time is not None
    assert gateway[0].start_time <= service[0].start_time


async def test_an_unsampled_fast_successful_request_leaves_no_span(
    spans: InMemorySpanExporter, users_server: RunningServer, valkey_url: str, tokens: Tokens
) -> None:
    async with await _gateway(users_server.port, valkey_url, tokens, slow_s=NOTHING_IS_SLOW) as api:
        answer, _, _, user_id = await _unsampled_get_of_a_new_user(api, spans)
        assert answer.status_code == 200
        # A sampled request after it, through the same processes: once its service span is
        # in, anything the unsampled one would have produced is in too (same exporter, FIFO).
        sampled = await api.get(f"/v1/users/{user_id}")
        assert sampled.status_code == 200

    finished = await _wait_for(
        spans, lambda s: any(x.kind == SpanKind.SERVER and x.name == GET_USER for x in s)
    )
    server_spans = [s for s in finished if s.kind == SpanKind.SERVER]
    assert len(server_spans) == 2, [s.name for s in finished]  # the sampled request's two
    assert not [s for s in finished if s.attributes and CAPTURE_ATTRIBUTE in s.attributes]


async def test_an_unsampled_request_answered_5xx_reaches_the_sink_as_an_error(
    spans: InMemorySpanExporter, valkey_url: str, tokens: Tokens, unused_tcp_port: int
) -> None:
    # Nobody listens on the users port: the gateway answers 503 (UNAVAILABLE), fast.
    async with await _gateway(unused_tcp_port, valkey_url, tokens, slow_s=NOTHING_IS_SLOW) as api:
        spans.clear()
        trace_id, caller_span_id, traceparent = _unsampled_parent()
        answer = await api.get(
            f"/v1/users/{secrets.token_hex(8)}", headers={"traceparent": traceparent}
        )

    assert answer.status_code == 503, answer.text
    finished = await _wait_for(spans, lambda s: bool(s))
    assert len(finished) == 1, [s.name for s in finished]
    span = finished[0]
    assert span.name == "GET /v1/users/{id}"
    _assert_captured_error(span, trace_id=trace_id, caller_span_id=caller_span_id)
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 503
    # The trace id the problem document gives the client is the captured span's.
    assert answer.json().get("trace_id") in (None, f"{trace_id:032x}")


def _assert_captured_error(span: ReadableSpan, *, trace_id: int, caller_span_id: int) -> None:
    """An error the tail capture recorded: the request's trace, under its caller, ERROR."""
    assert span.context is not None
    assert span.context.trace_id == trace_id
    assert span.parent is not None
    assert span.parent.span_id == caller_span_id
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes[CAPTURE_ATTRIBUTE] == "error"


def _failing_server_handler() -> grpc.GenericRpcHandler:
    async def fail(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        await context.abort(grpc.StatusCode.INTERNAL, "the store is on fire")
        raise AssertionError("abort returns by raising")

    async def not_found(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        raise AssertionError("abort returns by raising")

    return grpc.method_handlers_generic_handler(
        "test.Tail",
        {
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "Missing": grpc.unary_unary_rpc_method_handler(not_found),
        },
    )


async def test_a_service_call_that_fails_server_side_is_captured_and_a_not_found_is_not(
    spans: InMemorySpanExporter,
) -> None:
    """The shared interceptor chain's capture, on a real grpc.aio server: INTERNAL is a failure
    of the server (captured), NOT_FOUND an answer (not captured), neither slow."""
    server = grpc.aio.server(interceptors=server_interceptors(slow_s=NOTHING_IS_SLOW))
    server.add_generic_rpc_handlers((_failing_server_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    trace_id, caller_span_id, traceparent = _unsampled_parent()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for method, code in (
                ("Missing", grpc.StatusCode.NOT_FOUND),
                ("Fail", grpc.StatusCode.INTERNAL),
            ):
                call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                    f"/test.Tail/{method}"
                )
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await call(b"", metadata=(("traceparent", traceparent),), timeout=10)
                assert failed.value.code() == code
    finally:
        await server.stop(0)

    finished = await _wait_for(spans, lambda s: bool(s))
    assert [s.name for s in finished] == ["/test.Tail/Fail"]
    span = finished[0]
    _assert_captured_error(span, trace_id=trace_id, caller_span_id=caller_span_id)
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
