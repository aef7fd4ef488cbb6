"""The composition root: keys, pool, Valkey, users channel → AuthService, on the shared runtime.

``start(settings)`` builds and starts everything and returns a ``RunningServer`` (tests and the
dev launcher use it); ``serve(settings)`` is the process: start, wait for SIGTERM/SIGINT, stop.
How a service starts, serves, drains and stops is :mod:`portico_common.runtime`'s.

Start-up refuses bad signing-key settings (``KeyConfigError``: production without key files, an
unreadable or non-Ed25519 file, an unknown ``AUTH_ACTIVE_KID``) before binding anything. Like the
users service it starts while PostgreSQL is down (health NOT_SERVING until it answers).

Background tasks: the health probe, the sign-up reconciler (every
``signup.reconcile_interval_s``, see ``service.py``), the outbox relay (``auth.outbox`` to the
event stream, when ``outbox.relay_enabled``; ``portico_common.outbox``) and the consumer of
``user.deleted`` events (when ``user_deletions.enabled``; ``deletions.py``). At the stop, the
service's own identity session is ended (or left to expire while Valkey is down).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from portico.auth.v1 import auth_pb2, auth_pb2_grpc
from portico_auth.config import AuthSettings
from portico_auth.deletions import UserDeletions
from portico_auth.errors import ERROR_DOMAIN
from portico_auth.identity import ServiceIdentity
from portico_auth.keys import load_key_ring
from portico_auth.passwords import Passwords
from portico_auth.repository import CredentialRepository
from portico_auth.service import AuthService
from portico_auth.servicer import AuthServicer
from portico_auth.sessions import Sessions
from portico_auth.throttle import LoginThrottle
from portico_auth.tokens import TokenIssuer
from portico_auth.users_client import UsersClient
from portico_common import runtime as service_runtime
from portico_common.outbox import OutboxRelay
from portico_common.runtime import Runtime
from portico_common.runtime import serve as serve_running
from portico_common.tokens import JwksCache, TokenVerifier, ValkeySessions

SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]

__all__ = ["SERVICE", "RunningServer", "serve", "start"]

#: This service, started (``core``: its AuthService).
RunningServer = service_runtime.RunningServer[AuthService]


async def start(settings: AuthSettings) -> RunningServer:
    """Build the whole service from ``settings``, bind it and start serving."""
    keys = load_key_ring(
        settings.signing_key_files,
        active_kid=settings.active_kid,
        environment=settings.environment,
    )
    vk = settings.valkey
    async with Runtime("auth", settings) as runtime:
        pool = await runtime.pool()
        client = runtime.valkey(vk)
        users_channel = runtime.channel(settings.users_target)
        tokens = TokenIssuer(
            keys,
            issuer=settings.issuer,
            audience=settings.audience,
            ttl_s=settings.access_token_ttl_s,
        )
        sessions = Sessions(
            client,
            key_prefix=vk.key_prefix,
            ttl_s=settings.refresh_token_ttl_s,
            absolute_ttl_s=settings.session_absolute_ttl_s,
        )
        identity = ServiceIdentity(tokens, sessions)
        runtime.resources.push_async_callback(identity.close_quietly)
        service = AuthService(
            credentials=CredentialRepository(
                pool, query_timeout_s=settings.postgres.query_timeout_s
            ),
            users=UsersClient(users_channel, identity, timeout_s=settings.signup.users_timeout_s),
            passwords=await asyncio.to_thread(Passwords, settings.argon2),
            sessions=sessions,
            throttle=LoginThrottle(client, settings.throttle, key_prefix=vk.key_prefix),
            tokens=tokens,
            admin_emails=settings.admin_emails,
            pending_timeout_s=settings.signup.pending_timeout_s,
        )
        # Most AuthService RPCs are public (see auth.proto); the admin ones and any RPC added
        # later without a rule are checked with this service's own keys and sessions.
        verifier = TokenVerifier(
            JwksCache(keys.fetch_jwks),
            ValkeySessions(client, key_prefix=vk.key_prefix),
            issuer=settings.issuer,
            audience=settings.audience,
        )
        runtime.background(
            "signup-reconciler",
            partial(service.reconcile_forever, settings.signup.reconcile_interval_s),
        )
        if settings.outbox.relay_enabled:
            relay = OutboxRelay(
                pool, client, schema="auth", service="auth", settings=settings.outbox
            )
            runtime.background("outbox-relay", relay.run)
        if settings.user_deletions.enabled:
            runtime.background("user-deletions", deletions_consumer(runtime, settings, service))
        servicer = AuthServicer(service, keys)
        # Valkey is not probed: JWKS works without it; sign-up (whose calls to the users
        # service need the service identity's session), token, refresh and logout answer
        # UNAVAILABLE while it is down, which callers may retry.
        return await runtime.start(
            SERVICE,
            partial(auth_pb2_grpc.add_AuthServiceServicer_to_server, servicer),
            core=service,
            verifier=verifier,
            error_domain=ERROR_DOMAIN,
            degraded_reads=False,
            listening_note=f" (signing kid {keys.active.kid}, {len(keys.keys)} key(s) in the JWKS)",
        )


def deletions_consumer(
    runtime: Runtime, settings: AuthSettings, service: AuthService
) -> Callable[[], Coroutine[Any, Any, None]]:
    """The ``user.deleted`` consumer's loop, on a Valkey client of its own whose reply limit
    outlasts ``XREADGROUP … BLOCK``."""
    vk = settings.valkey
    blocking = vk.model_copy(
        update={"socket_timeout_s": settings.user_deletions.block_ms / 1000 + vk.socket_timeout_s}
    )
    consumer = UserDeletions(
        service,
        runtime.valkey(blocking),
        settings.user_deletions,
        stream=settings.outbox.stream,
    )
    return consumer.run


async def serve(settings: AuthSettings) -> None:
    """Run the service until SIGTERM or SIGINT, then stop gracefully."""
    await serve_running(await start(settings), settings)
