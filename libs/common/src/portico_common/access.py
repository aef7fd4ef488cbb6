"""Who may call what: the ``portico.access.v1.rule`` method option, enforced in one place.

The rule of each RPC is declared in its proto (see ``proto/portico/access/v1/access.proto``).
The gateway checks it for REST callers and :class:`AccessInterceptor` checks it for gRPC
callers, both through :func:`check`, so the two can never disagree:

* public RPCs need nothing;
* every other RPC needs a valid access token (:class:`~portico_common.tokens.TokenVerifier`):
  none or a bad one is :class:`Unauthenticated`;
* then ``authenticated``, one of ``roles``, or owning the user named by ``owner_field`` lets the
  caller in; anyone else is :class:`PermissionDenied`.

An RPC without the option gets :data:`DEFAULT_RULE` (admins only): a forgotten option closes an
RPC, it never opens one. Health checking and reflection are not Portico RPCs; the interceptor
leaves them (and anything else outside ``rules``' services) to their own servicers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import grpc
from google.api import annotations_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from portico.access.v1 import access_pb2
from portico_common.interceptors import HandlerCache
from portico_common.tokens import (
    CheckUnavailable,
    InvalidToken,
    Principal,
    SessionStoreUnavailable,
    TokenVerifier,
    bearer_token,
)

_log = logging.getLogger(__name__)

Rule = access_pb2.Rule

#: The rule of an RPC that declares none: admins only.
DEFAULT_RULE = access_pb2.Rule(roles=["admin"])

#: The verified caller of the current gRPC call (None for public RPCs and outside calls).
PRINCIPAL: ContextVar[Principal | None] = ContextVar("portico_principal", default=None)

#: Services whose methods are not Portico RPCs and stay open to everyone.
OPEN_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


class AccessError(Exception):
    """The caller may not make this call; ``reason`` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unauthenticated(AccessError):  # noqa: N818 (named after the status it maps to)
    """No valid access token (HTTP 401, UNAUTHENTICATED)."""


class PermissionDenied(AccessError):  # noqa: N818
    """A valid token that this rule does not admit (HTTP 403, PERMISSION_DENIED)."""


class SessionCheckUnavailable(Exception):  # noqa: N818 (the condition; maps to UNAVAILABLE)
    """The token cannot be checked now (the session store or the auth service's key set did not
    answer); ``detail`` is safe to show, with a retry."""

    def __init__(self, detail: str = SessionStoreUnavailable.detail) -> None:
        super().__init__(detail)
        self.detail = detail


def rule_of(method: MethodDescriptor) -> access_pb2.Rule:
    """The declared rule of ``method``, or :data:`DEFAULT_RULE`."""
    options = method.GetOptions()
    if options.HasExtension(access_pb2.rule):
        rule: access_pb2.Rule = options.Extensions[access_pb2.rule]
        return rule
    return DEFAULT_RULE


def rules_of(services: Iterable[ServiceDescriptor]) -> dict[str, access_pb2.Rule]:
    """Method path (``/portico.users.v1.UserService/GetUser``) → rule, for ``services``."""
    return {
        f"/{service.full_name}/{method.name}": rule_of(method)
        for service in services
        for method in service.methods
    }


def is_read_only(method: MethodDescriptor) -> bool:
    """Whether every ``google.api.http`` binding of ``method`` (additional ones too) is ``get``:
    a call that changes nothing, safe to retry and to accept in the session store's degraded
    mode (:class:`~portico_common.tokens.SessionStorePolicy`)."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return False
    rule = options.Extensions[annotations_pb2.http]
    return all(r.WhichOneof("pattern") == "get" for r in (rule, *rule.additional_bindings))


def read_only_methods(services: Iterable[ServiceDescriptor]) -> frozenset[str]:
    """Method paths (``/pkg.Service/Method``) of ``services`` that :func:`is_read_only`."""
    return frozenset(
        f"/{service.full_name}/{method.name}"
        for service in services
        for method in service.methods
        if is_read_only(method)
    )


def field_value(message: Message, dotted: str) -> Any:
    """The value at a dotted field path of ``message`` ("" when a step is unset or unknown)."""
    value: Any = message
    for name in dotted.split("."):
        if not isinstance(value, Message) or name not in value.DESCRIPTOR.fields_by_name:
            return ""
        value = getattr(value, name)
    return value


def allows(rule: access_pb2.Rule, principal: Principal, request: Message) -> bool:
    """Whether ``rule`` lets the (authenticated) ``principal`` send ``request``."""
    if rule.public or rule.authenticated:
        return True
    if principal.roles.intersection(rule.roles):
        return True
    if rule.owner_field:
        owner = field_value(request, rule.owner_field)
        # User ids are UUIDs: compare case-insensitively, as PostgreSQL would.
        return isinstance(owner, str) and owner.lower() == principal.user_id.lower() != ""
    return False


def denial(rule: access_pb2.Rule) -> str:
    """The client-safe message of a refusal by ``rule``."""
    who = [f"role {r!r}" for r in rule.roles]
    if rule.owner_field:
        who.insert(0, "the user it names")
    return "this call is allowed to " + (" or ".join(who) or "nobody")


async def authenticate(
    verifier: TokenVerifier, authorization: str | None, *, read_only: bool = False
) -> Principal:
    """The principal of an ``Authorization`` value; :class:`Unauthenticated` if there is none.

    Raises :class:`SessionCheckUnavailable` when the signing keys cannot be fetched for a key the
    token names, or when the session store fails and the verifier's
    :class:`~portico_common.tokens.SessionStorePolicy` does not accept the token without it
    (``read_only`` calls are accepted in its degraded mode, writes only for recently seen
    sessions).
    """
    token = bearer_token(authorization)
    if token is None:
        raise Unauthenticated("missing bearer token")
    try:
        return await verifier.verify(token, read_only=read_only)
    except InvalidToken as exc:
        raise Unauthenticated(exc.reason) from None
    except CheckUnavailable as exc:  # the store's or the key set's errors, never a bad token's
        _log.warning("token check failed: %s", exc)
        raise SessionCheckUnavailable(exc.detail) from exc


async def check(
    rule: access_pb2.Rule,
    verifier: TokenVerifier,
    authorization: str | None,
    request: Message,
    *,
    read_only: bool = False,
) -> Principal | None:
    """Apply ``rule`` to a call: the caller's principal (None for public RPCs), or raise."""
    if rule.public:
        return None
    principal = await authenticate(verifier, authorization, read_only=read_only)
    if not allows(rule, principal, request):
        raise PermissionDenied(denial(rule))
    return principal


Context = grpc.aio.ServicerContext[Any, Any]
Behaviour = Callable[[Any, Context], Awaitable[Any]]
if TYPE_CHECKING:  # grpc's handler types are generic for type checkers only
    Handler = grpc.RpcMethodHandler[Any, Any]
    Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]


def _authorization(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            return value
    return None


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """Applies each RPC's rule to gRPC callers and sets :data:`PRINCIPAL` for the servicer.

    ``rules`` comes from :func:`rules_of` over the services this server serves. Methods under
    :data:`OPEN_SERVICES` pass through; any other method without a rule gets
    :data:`DEFAULT_RULE`. Refusals abort with UNAUTHENTICATED / PERMISSION_DENIED (the reason
    as message); an unreachable session store is UNAVAILABLE, unless the verifier's degraded
    mode accepts the call (``read_only``: the methods of :func:`read_only_methods`).
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        rules: Mapping[str, access_pb2.Rule],
        read_only: Iterable[str] = (),
    ) -> None:
        self._verifier = verifier
        self._rules = dict(rules)
        self._read_only = frozenset(read_only)
        self._handlers = HandlerCache()

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        return self._handlers.get(method, handler, lambda inner: self._guarded(inner, method))

    def _guarded(self, handler: Handler, method: str) -> Handler:
        rule = self._rules.get(method, DEFAULT_RULE)
        if handler.unary_unary is None:  # Portico serves unary RPCs only; refuse the rest
            return _refusing(handler)
        behaviour: Behaviour = handler.unary_unary  # type: ignore[assignment]
        return grpc.unary_unary_rpc_method_handler(
            self._wrap(behaviour, rule, read_only=method in self._read_only),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap(self, behaviour: Behaviour, rule: access_pb2.Rule, *, read_only: bool) -> Behaviour:
        verifier = self._verifier

        async def call(request: Any, context: Context) -> Any:
            try:
                principal = await check(
                    rule, verifier, _authorization(context), request, read_only=read_only
                )
            except Unauthenticated as exc:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.reason)
            except PermissionDenied as exc:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, exc.reason)
            except SessionCheckUnavailable as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, exc.detail)
            token = PRINCIPAL.set(principal)
            try:
                return await behaviour(request, context)
            finally:
                PRINCIPAL.reset(token)

        return call


def _refusing(handler: Handler) -> Handler:
    """A handler that refuses a non-unary Portico method (none exist; closed by default)."""
    del handler

    async def refuse(request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "streaming calls are not served")

    return grpc.unary_unary_rpc_method_handler(refuse)
