"""grpc.aio server interceptors: request id, validation, and the one place errors become statuses.

Adapted from ``portico_users.interceptors`` (the second copy; a third moves to ``portico_common``).

Install them in this order (outermost first)::

    grpc.aio.server(
        interceptors=[RequestIdInterceptor(), ErrorInterceptor(), ValidationInterceptor(v)]
    )

* ``RequestIdInterceptor`` puts the caller's ``x-request-id`` (or a fresh one) into the
  ``request_id`` ContextVar, which every log line of the call shows.
* ``ErrorInterceptor`` turns a ``DomainError`` into its status code, with rich details in
  ``grpc-status-details-bin`` (``google.rpc.BadRequest`` for INVALID_ARGUMENT, ``RetryInfo`` for
  RESOURCE_EXHAUSTED). Any other exception is logged with its traceback and
  answered as a bare INTERNAL: no exception text, SQL or traceback reaches the client.
* ``ValidationInterceptor`` checks each request against its protovalidate rules and raises
  ``InvalidArgument`` with one field violation per broken rule (``password`` …), so gRPC
  and REST callers (through the gateway) get identical validation.

They wrap unary-unary methods only; streaming methods (health Watch, reflection) pass through.
"""

from __future__ import annotations

import abc
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import protovalidate
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from portico_auth._logging import request_id
from portico_auth.errors import (
    DeadlineExceeded,
    DomainError,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)

_log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
Behaviour = Callable[[Any, Context], Awaitable[Any]]
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def status_of(error: DomainError) -> grpc.Status:
    """The gRPC status (code, message, rich details) that reports ``error`` to the client."""
    status = status_pb2.Status(code=error.grpc_code.value[0], message=error.message)
    if isinstance(error, InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        status.details.add().Pack(bad_request)
    if isinstance(error, ResourceExhausted):
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromMilliseconds(max(1, math.ceil(error.retry_after_s * 1000)))
        status.details.add().Pack(retry)
    return rpc_status.to_status(status)


def field_path(violation: protovalidate.Violation) -> str:
    """The dotted proto path of a violation's field (``user.display_name``, ``tags[2]``)."""
    parts: list[str] = []
    path = violation.proto.field
    for element in path.elements if path is not None else ():
        part = element.field_name
        subscript = element.subscript  # protobuf.Oneof(field=<kind>, value=<index or key>)
        if subscript is not None:
            value = subscript.value
            part += f"[{value}]" if subscript.field == "index" else f"[{value!r}]"
        parts.append(part)
    return ".".join(parts)


class _UnaryInterceptor(grpc.aio.ServerInterceptor, abc.ABC):
    """Wraps the behaviour of every unary-unary method with ``wrap``."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        behaviour: Behaviour = handler.unary_unary  # type: ignore[assignment]
        return grpc.unary_unary_rpc_method_handler(
            self.wrap(behaviour, handler_call_details.method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @abc.abstractmethod
    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        """The behaviour to run instead of ``behaviour`` for ``method``."""


class RequestIdInterceptor(_UnaryInterceptor):
    """Sets the ``request_id`` ContextVar from ``x-request-id`` (a new id if absent or odd)."""

    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        async def call(request: Any, context: Context) -> Any:
            token = request_id.set(_request_id_of(context))
            try:
                return await behaviour(request, context)
            finally:
                request_id.reset(token)

        return call


def _request_id_of(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex


class ErrorInterceptor(_UnaryInterceptor):
    """Maps exceptions to statuses: the only place that does."""

    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        async def call(request: Any, context: Context) -> Any:
            try:
                return await behaviour(request, context)
            except grpc.aio.AbortError:
                raise  # the status is already set
            except DomainError as error:
                if isinstance(error, Unavailable | DeadlineExceeded):
                    _log.warning("%s: %s (%s)", method, error.grpc_code.name, error.__cause__)
                status = status_of(error)
                await context.abort(status.code, status.details, status.trailing_metadata)
            except Exception:
                _log.exception("%s failed with an unexpected error", method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        return call


class ValidationInterceptor(_UnaryInterceptor):
    """Rejects requests that break their protovalidate rules, before the servicer runs."""

    def __init__(self, validator: protovalidate.Validator) -> None:
        self._validator = validator

    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        async def call(request: Any, context: Context) -> Any:
            violations = self._validator.collect_violations(request)
            if violations:
                raise InvalidArgument(
                    FieldViolation(field_path(v), v.proto.message) for v in violations
                )
            return await behaviour(request, context)

        return call
