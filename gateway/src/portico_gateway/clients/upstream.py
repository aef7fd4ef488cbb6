"""One long-lived grpc.aio channel per upstream service, and the calls made on it.

Every call carries a deadline (the configured one, or the client's if shorter) and the request
id as ``x-request-id`` metadata. Retries are not done here: the channel's service config retries
idempotent RPCs (:mod:`.retries`), and is turned off where the mesh retries (Istio retries
``unavailable,connect-failure,reset``), so never two layers at once.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from portico_gateway.errors import RequestError

HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class Upstream:
    """A named gRPC upstream: its channel, default deadline and cached method callables."""

    def __init__(
        self,
        name: str,
        channel: grpc.aio.Channel,
        *,
        timeout_s: float,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.name = name
        self.channel = channel
        self.timeout_s = timeout_s
        #: Sent with every call to this upstream, and to no other (the auth service's forwarder
        #: key: :func:`portico_gateway.lifespan.upstream_metadata`).
        self._metadata = metadata
        self._methods: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}

    def _method(
        self, path: str, response_class: type[Message]
    ) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
        method = self._methods.get(path)
        if method is None:
            method = self._methods[path] = self.channel.unary_unary(
                path,
                request_serializer=_serialize,
                response_deserializer=response_class.FromString,
            )
        return method

    async def call(
        self,
        path: str,
        request: Message,
        response_class: type[Message],
        *,
        request_id: str,
        timeout_s: float | None = None,
        forwarded: tuple[tuple[str, str], ...] = (),
    ) -> Any:
        """Call ``path`` (``/package.Service/Method``); raises ``grpc.aio.AioRpcError``.

        ``forwarded`` is extra metadata from the HTTP request (the caller's ``authorization``,
        ``x-forwarded-for``), passed on as is once :func:`check_metadata` has passed it: a value
        gRPC cannot carry is a 400 naming the header.
        """
        check_metadata(forwarded)
        timeout = self.timeout_s if timeout_s is None else min(timeout_s, self.timeout_s)
        method = self._method(path, response_class)
        metadata = (("x-request-id", request_id), *forwarded, *self._metadata)
        return await method(request, timeout=timeout, metadata=metadata)

    async def health(self, *, timeout_s: float) -> str:
        """The upstream's overall ``grpc.health.v1`` status name, or why it has none."""
        try:
            reply = await self._method(HEALTH_CHECK, health_pb2.HealthCheckResponse)(
                health_pb2.HealthCheckRequest(), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def sendable(value: str) -> bool:
    """Whether gRPC can carry ``value`` as ASCII metadata: visible ASCII and spaces only.

    HTTP/1.1 lets a header value hold a TAB and bytes 0x80-0xFF (``obs-text``); gRPC's C core
    refuses them ("Illegal header value") and grpc.aio then never completes the call: the
    request would hang until the client gave up. ``isascii() and isprintable()`` is exactly
    0x20-0x7E, in C.
    """
    return value.isascii() and value.isprintable()


def check_metadata(metadata: tuple[tuple[str, str], ...]) -> None:
    """A 400 problem naming the first forwarded header whose value gRPC cannot carry."""
    for key, value in metadata:
        if not sendable(value):
            raise RequestError(
                400,
                f"the {key} header holds characters that cannot be forwarded"
                " (only visible ASCII and spaces are allowed)",
                kind="invalid-header",
            )


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
