"""Authentication and authorization of REST callers: the same rules as for gRPC callers.

* :class:`AuthenticationMiddleware` verifies a bearer token when the request carries one, with
  the lifespan's :class:`~portico_common.tokens.TokenVerifier` (JWKS cached from the auth
  service, session checked in Valkey with one ``EXISTS``; no call to the auth service per
  request), and records the outcome in ``scope["state"]``: ``principal`` (a
  :class:`~portico_common.tokens.Principal`) or ``auth_problem``. It refuses nothing itself, so
  the rate limiter behind it can count per user, and public routes work with any header.
* :func:`enforce` is called by each route with the RPC's ``portico.access.v1.rule`` (the one the
  service's interceptor applies too, :mod:`portico_common.access`): 401 with
  ``WWW-Authenticate`` (RFC 6750) when a token is needed and missing or bad, 403 when the rule
  does not admit the caller, 503 when the session store cannot be asked and the verifier's
  :class:`~portico_common.tokens.SessionStorePolicy` does not accept the token without it
  (by default GET/HEAD are accepted on the signature alone, writes only for a session this
  process saw alive within the last minute).

The gateway forwards the caller's ``Authorization`` upstream, and each service checks it again:
the gateway is a convenience and a first filter, never the only gate.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from portico.access.v1 import access_pb2
from portico_common.access import (
    PermissionDenied,
    SessionCheckUnavailable,
    Unauthenticated,
    allows,
    authenticate,
    denial,
)
from portico_common.tokens import Principal, TokenVerifier, bearer_token
from portico_gateway.errors import RequestError
from portico_gateway.middleware.asgi import header

REALM = "portico"
#: Methods that change nothing: accepted on the token's signature while the session store is
#: unreachable (the verifier's degraded mode; every GET route is bound to a ``get`` RPC).
_READ_ONLY = frozenset({"GET", "HEAD"})


def challenge(error: str | None = None, description: str | None = None) -> str:
    """An RFC 6750 ``WWW-Authenticate`` value (quotes in the description are dropped)."""
    value = f'Bearer realm="{REALM}"'
    if error:
        value += f', error="{error}"'
    if description:
        value += ', error_description="{}"'.format(description.replace('"', ""))
    return value


class AuthenticationMiddleware:
    """Verifies the bearer token, if any, and leaves the verdict in ``scope["state"]``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            state = scope.setdefault("state", {})
            state["principal"] = state["auth_problem"] = None  # this request's verdict only
            authorization = header(scope, b"authorization")
            verifier: TokenVerifier | None = state.get("verifier")
            # Other schemes (Basic …) are no bearer credentials at all: RFC 6750 section 3.1
            # then wants a bare challenge, without an error code.
            if bearer_token(authorization) is not None and verifier is not None:
                try:
                    state["principal"] = await authenticate(
                        verifier, authorization, read_only=scope["method"] in _READ_ONLY
                    )
                except (Unauthenticated, SessionCheckUnavailable) as exc:
                    state["auth_problem"] = exc
        await self.app(scope, receive, send)


def principal_of(scope: Scope) -> Principal | None:
    """The verified caller of this request, if it sent a valid token."""
    principal: Principal | None = scope.get("state", {}).get("principal")
    return principal


def authenticated(scope: Scope) -> Principal:
    """The caller's principal; :class:`RequestError` 401 (or 503) when there is none."""
    principal = principal_of(scope)
    if principal is not None:
        return principal
    state: dict[str, Any] = scope.get("state", {})
    problem = state.get("auth_problem")
    if isinstance(problem, SessionCheckUnavailable):
        raise RequestError(
            503, problem.detail, kind="session-check-unavailable", headers={"Retry-After": "1"}
        )
    headers = Headers(scope=scope)
    if problem is None and bearer_token(headers.get("authorization")) is None:
        detail = "this route needs an access token: send Authorization: Bearer <token>"
        raise RequestError(
            401, detail, kind="unauthenticated", headers={"WWW-Authenticate": challenge()}
        )
    reason = problem.reason if isinstance(problem, Unauthenticated) else "invalid token"
    raise RequestError(
        401,
        f"the access token was refused: {reason}",
        kind="invalid-token",
        headers={"WWW-Authenticate": challenge("invalid_token", reason)},
    )


def enforce_authenticated(rule: access_pb2.Rule, scope: Scope) -> Principal | None:
    """Step one of a rule, before the request is read: a token when the rule needs one."""
    return None if rule.public else authenticated(scope)


def enforce(rule: access_pb2.Rule, principal: Principal | None, message: Message) -> None:
    """Step two, on the transcoded request: 403 unless the rule admits the caller."""
    if rule.public or principal is None:
        return
    if not allows(rule, principal, message):
        exc = PermissionDenied(denial(rule))
        raise RequestError(
            403,
            exc.reason,
            kind="permission-denied",
            headers={"WWW-Authenticate": challenge("insufficient_scope", exc.reason)},
        )
