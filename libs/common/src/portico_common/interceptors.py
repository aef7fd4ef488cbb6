"""grpc.aio server interceptors every Portico service installs: request id, errors, validation.

Install them in this order (outermost first), with the service's own error mapping::

    grpc.aio.server(interceptors=[
        RequestIdInterceptor(),
        ErrorInterceptor(DomainError, status_of),
        AccessInterceptor(verifier, rules),          # portico_common.access
        ValidationInterceptor(validator, InvalidArgument.from_pairs),
    ])

* :class:`RequestIdInterceptor` puts the caller's ``x-request-id`` (or a fresh one) into
  :data:`portico_common.logs.REQUEST_ID`, which every log line of the call shows.
* :class:`ErrorInterceptor` is the one place exceptions become statuses: a service error
  (``errors``) becomes the status ``status_of`` gives (code, client-safe message, rich details in
  ``grpc-status-details-bin``); any other exception is logged with its traceback and answered as
  a bare INTERNAL, so no exception text, SQL or traceback reaches the client.
* :class:`ValidationInterceptor` checks each request against its protovalidate rules before the
  servicer runs and raises what ``reject`` makes of the ``(field path, message)`` pairs, so gRPC
  and REST callers (through the gateway) get identical validation.

They wrap unary-unary methods only; streaming methods (health Watch, reflection) pass through.
"""

from __future__ import annotations

import abc
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from portico_common.deadlines import CALL_DEADLINE
from portico_common.logs import REQUEST_ID

_log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
Behaviour = Callable[[Any, Context], Awaitable[Any]]
if TYPE_CHECKING:  # grpc's handler types are generic for type checkers only
    import protovalidate  # (only its types: the gateway imports this module without it)

    Handler = grpc.RpcMethodHandler[Any, Any]
    Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
#: Statuses worth a warning in the log (the dependency behind them is in trouble).
_WARN = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


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


class HandlerCache:
    """The wrapped handler of each method, built once instead of on every call.

    grpc.aio asks every interceptor for the method's handler on each call. A method's handler is
    the same object each time (the servicer's, or the next interceptor's cached one), so the
    handler wrapped around it is kept per method and reused while its inner handler stays the
    same; a different inner handler is wrapped anew. Only served methods get here (an unknown
    method has no handler), so this holds one entry per RPC of the server at most.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def get(self, method: str, handler: Handler, wrap: Callable[[Handler], Handler]) -> Handler:
        held = self._wrapped.get(method)
        if held is not None and held[0] is handler:
            return held[1]
        wrapped = wrap(handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class UnaryInterceptor(grpc.aio.ServerInterceptor, abc.ABC):
    """Wraps the behaviour of every unary-unary method with :meth:`wrap` (once per method)."""

    _handlers: HandlerCache

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        try:
            handlers = self._handlers
        except AttributeError:  # subclasses need not call an __init__ of ours
            handlers = self._handlers = HandlerCache()
        return handlers.get(method, handler, lambda inner: self._wrapped(inner, method))

    def _wrapped(self, handler: Handler, method: str) -> Handler:
        behaviour: Behaviour = handler.unary_unary  # type: ignore[assignment]
        return grpc.unary_unary_rpc_method_handler(
            self.wrap(behaviour, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @abc.abstractmethod
    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        """The behaviour to run instead of ``behaviour`` for ``method``."""


class RequestIdInterceptor(UnaryInterceptor):
    """Sets :data:`REQUEST_ID` from ``x-request-id`` (a new id if absent or odd), and
    :data:`~portico_common.deadlines.CALL_DEADLINE` from the caller's deadline."""

    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        async def call(request: Any, context: Context) -> Any:
            token = REQUEST_ID.set(_request_id_of(context))
            remaining = context.time_remaining()
            deadline = CALL_DEADLINE.set(
                None if remaining is None else time.monotonic() + remaining
            )
            try:
                return await behaviour(request, context)
            finally:
                CALL_DEADLINE.reset(deadline)
                REQUEST_ID.reset(token)

        return call


def _request_id_of(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex


class ErrorInterceptor(UnaryInterceptor):
    """Maps exceptions to statuses: the only place that does."""

    def __init__(self, errors: type[Exception], status_of: Callable[[Any], grpc.Status]) -> None:
        self._errors = errors
        self._status_of = status_of

    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        async def call(request: Any, context: Context) -> Any:
            try:
                return await behaviour(request, context)
            except grpc.aio.AbortError:
                raise  # the status is already set
            except self._errors as error:
                status = self._status_of(error)
                if status.code in _WARN:
                    _log.warning("%s: %s (%s)", method, status.code.name, error.__cause__)
                await context.abort(status.code, status.details, status.trailing_metadata)
            except Exception:
                _log.exception("%s failed with an unexpected error", method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        return call


class ValidationInterceptor(UnaryInterceptor):
    """Rejects requests that break their protovalidate rules, before the servicer runs."""

    def __init__(
        self,
        validator: protovalidate.Validator,
        reject: Callable[[Sequence[tuple[str, str]]], Exception],
    ) -> None:
        self._validator = validator
        self._reject = reject

    def wrap(self, behaviour: Behaviour, method: str) -> Behaviour:
        async def call(request: Any, context: Context) -> Any:
            violations = self._validator.collect_violations(request)
            if violations:
                raise self._reject([(field_path(v), v.proto.message) for v in violations])
            return await behaviour(request, context)

        return call
