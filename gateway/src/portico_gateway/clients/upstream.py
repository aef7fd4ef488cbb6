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

HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class Upstream:
    """A named gRPC upstream: its channel, default deadline and cached method callables."""

    def __init__(self, name: str, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        self.name = name
        self.channel = channel
        self.timeout_s = timeout_s
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
        ``x-forwarded-for``), passed on as is.
        """
        timeout = self.timeout_s if timeout_s is None else min(timeout_s, self.timeout_s)
        method = self._method(path, response_class)
        metadata = (("x-request-id", request_id), *forwarded)
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


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
