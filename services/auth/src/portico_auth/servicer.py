"""``portico.auth.v1.AuthService``: proto in, domain call, proto out. Nothing else.

Validation happened in the interceptor; domain errors raised below are mapped to statuses by the
error interceptor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

import grpc
from pydantic import SecretStr

from portico.auth.v1 import auth_pb2, auth_pb2_grpc
from portico_auth.domain import TokenGrant
from portico_auth.keys import KeyRing
from portico_auth.service import AuthService
from portico_auth.sessions import SessionInfo
from portico_auth.throttle import client_address
from portico_common.access import PRINCIPAL

Context = grpc.aio.ServicerContext[Any, Any]


def bearer_token(metadata: Any) -> str | None:
    """The token of an ``authorization: Bearer <token>`` metadata entry, if there is one."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def jwks(keys: KeyRing) -> auth_pb2.GetJwksResponse:
    """The JWK Set of a key ring (the signing key first)."""
    return auth_pb2.GetJwksResponse(keys=[auth_pb2.JsonWebKey(**k.jwk()) for k in keys.keys])


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """The AuthService RPCs over an ``AuthService``."""

    def __init__(
        self, service: AuthService, keys: KeyRing, *, forwarder_keys: Sequence[SecretStr] = ()
    ) -> None:
        self._service = service
        self._jwks = jwks(keys)
        self._forwarder_keys = tuple(forwarder_keys)

    def _address(self, context: Context) -> str:
        """The client address to throttle on (``x-forwarded-for`` only from the gateway)."""
        return client_address(
            context.invocation_metadata(), context.peer(), forwarder_keys=self._forwarder_keys
        )

    async def SignUp(
        self, request: auth_pb2.SignUpRequest, context: Context
    ) -> auth_pb2.SignUpResponse:
        credential = await self._service.sign_up(
            email=request.email,
            display_name=request.display_name,
            password=request.password,
            # optional: without one, a retry meets the email this sign-up reserved (409)
            idempotency_key=UUID(request.idempotency_key) if request.idempotency_key else uuid4(),
            address=self._address(context),
        )
        return auth_pb2.SignUpResponse(user_id=str(credential.user_id), email=credential.email)

    async def IssueToken(
        self, request: auth_pb2.IssueTokenRequest, context: Context
    ) -> auth_pb2.IssueTokenResponse:
        grant = await self._service.issue_token(
            username=request.username,
            password=request.password,
            address=self._address(context),
        )
        return auth_pb2.IssueTokenResponse(**_grant_fields(grant))

    async def RefreshToken(
        self, request: auth_pb2.RefreshTokenRequest, context: Context
    ) -> auth_pb2.RefreshTokenResponse:
        grant = await self._service.refresh(refresh_token=request.refresh_token)
        return auth_pb2.RefreshTokenResponse(**_grant_fields(grant))

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: Context
    ) -> auth_pb2.LogoutResponse:
        await self._service.logout(
            refresh_token=request.refresh_token,
            bearer=bearer_token(context.invocation_metadata()),
        )
        return auth_pb2.LogoutResponse()

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: Context
    ) -> auth_pb2.GetJwksResponse:
        return self._jwks

    async def ListUserSessions(
        self, request: auth_pb2.ListUserSessionsRequest, context: Context
    ) -> auth_pb2.ListUserSessionsResponse:
        found = await self._service.list_sessions(request.user_id.lower(), actor=_actor())
        return auth_pb2.ListUserSessionsResponse(sessions=[_session(s) for s in found])

    async def EndUserSessions(
        self, request: auth_pb2.EndUserSessionsRequest, context: Context
    ) -> auth_pb2.EndUserSessionsResponse:
        ended = await self._service.end_sessions_of(
            request.user_id.lower(), actor=_actor(), reason="admin"
        )
        return auth_pb2.EndUserSessionsResponse(ended=ended)


def _actor() -> str | None:
    """Who is calling (the access token's user id), as the access interceptor verified it."""
    principal = PRINCIPAL.get()
    return principal.user_id if principal is not None else None


def _session(info: SessionInfo) -> auth_pb2.Session:
    session = auth_pb2.Session(session_id=info.session_id)
    for stamp, ms in (
        (session.create_time, info.created_ms),
        (session.refresh_time, info.refreshed_ms),
        (session.idle_expire_time, info.idle_expires_ms),
        (session.end_time, info.ends_ms),
    ):
        if ms:  # 0: unknown (a session older than these fields), left unset
            stamp.FromMilliseconds(ms)
    return session


def _grant_fields(grant: TokenGrant) -> dict[str, Any]:
    return {
        "access_token": grant.access_token,
        "token_type": grant.token_type,
        "expires_in": grant.expires_in,
        "refresh_token": grant.refresh_token,
        "scope": grant.scope,
    }
