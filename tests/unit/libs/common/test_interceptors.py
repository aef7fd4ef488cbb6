"""Server interceptors wrap each method's handler once, not on every call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from portico.users.v1 import users_pb2
from portico_common.access import AccessInterceptor, rules_of
from portico_common.interceptors import RequestIdInterceptor
from portico_common.metrics import ServerMetricsInterceptor
from portico_common.tokens import TokenVerifier

METHOD = "/portico.users.v1.UserService/GetUser"
if TYPE_CHECKING:  # grpc's handler type is generic for type checkers only
    Handler = grpc.RpcMethodHandler[Any, Any]


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


async def _behaviour(request: Any, context: Any) -> Any:
    return request


def _continuation(
    handler: Handler | None,
) -> Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]:
    async def continuation(details: grpc.HandlerCallDetails) -> Any:
        return handler

    return continuation


@pytest.fixture
def interceptors() -> list[grpc.aio.ServerInterceptor]:
    verifier: TokenVerifier = None  # type: ignore[assignment]  # never called here
    rules = rules_of([users_pb2.DESCRIPTOR.services_by_name["UserService"]])
    return [RequestIdInterceptor(), AccessInterceptor(verifier, rules), ServerMetricsInterceptor()]


async def test_a_method_keeps_its_wrapped_handler_while_the_inner_one_stays(
    interceptors: list[grpc.aio.ServerInterceptor],
) -> None:
    inner: Handler = grpc.unary_unary_rpc_method_handler(_behaviour)
    for interceptor in interceptors:
        first = await interceptor.intercept_service(_continuation(inner), Details(METHOD))
        again = await interceptor.intercept_service(_continuation(inner), Details(METHOD))
        assert first is again
        assert first is not inner
        assert first is not None
        assert first.unary_unary is not _behaviour  # wrapped

        other: Handler = grpc.unary_unary_rpc_method_handler(_behaviour)
        rewrapped = await interceptor.intercept_service(_continuation(other), Details(METHOD))
        assert rewrapped is not first  # a new inner handler is wrapped anew


async def test_unknown_methods_and_streams_pass_through(
    interceptors: list[grpc.aio.ServerInterceptor],
) -> None:
    async def stream(request: Any, context: Any) -> Any:
        yield request

    streaming: Handler = grpc.unary_stream_rpc_method_handler(stream)
    for interceptor in interceptors[::2]:  # request id and metrics (access refuses streams)
        assert await interceptor.intercept_service(_continuation(None), Details(METHOD)) is None
        passed = await interceptor.intercept_service(_continuation(streaming), Details(METHOD))
        assert passed is streaming
