"""The composition root: keys, pool, Valkey, users channel → AuthService, on the shared runtime.

``start(settings)`` builds, binds and starts it (tests and the dev launcher use it); ``serve`` is
the process. How a service starts, serves, drains and stops is :mod:`portico_common.runtime`'s.

Start-up refuses bad signing-key settings (``KeyConfigError``: production without key files, an
unreadable or non-Ed25519 file, an unknown ``AUTH_ACTIVE_KID``) before binding anything. Like the
users service it starts while PostgreSQL is down (health NOT_SERVING until it answers).

Background tasks: the health probe, the sign-up reconciler (every
``signup.reconcile_interval_s``, see ``service.py``), the outbox relay (``auth.outbox`` to the
event stream) and the consumer of ``user.deleted`` events (when ``user_deletions.enabled``;
``deletions.py``). At the stop, the
service's own identity session is ended (or left to expire while Valkey is down).
"""

from __future__ import annotations

import asyncio
from functools import partial

from portico.auth.v1 import auth_pb2
from portico.auth.v1.auth_pb2_grpc import add_AuthServiceServicer_to_server as add_servicer
from portico_auth.config import AuthSettings
from portico_auth.deletions import deletions_consumer
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
from portico_common.runtime import GrpcService, Runtime, serving
from portico_common.tokens import ValkeySessions

#: AuthService as the shared runtime serves it: name, proto service, registration, error domain.
SERVICE = GrpcService(
    "auth", auth_pb2.DESCRIPTOR.services_by_name["AuthService"], add_servicer, ERROR_DOMAIN
)

#: This service, started (``core``: its AuthService).
RunningServer = service_runtime.RunningServer[AuthService]


async def start(settings: AuthSettings) -> RunningServer:
    """Build the whole service from ``settings``, bind it and start serving."""
    keys = load_key_ring(
        settings.signing_key_files, active_kid=settings.active_kid, environment=settings.environment
    )
    vk = settings.valkey
    async with Runtime(SERVICE, settings) as runtime:
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
        verifier = tokens.verifier(ValkeySessions(client, key_prefix=vk.key_prefix))
        runtime.background(
            "signup-reconciler",
            partial(service.reconcile_forever, settings.signup.reconcile_interval_s),
        )
        runtime.outbox_relay(pool, client, settings.outbox)
        if settings.user_deletions.enabled:
            runtime.background("user-deletions", deletions_consumer(runtime, settings, service))
        # Valkey is not probed: JWKS works without it; sign-up (whose calls to the users
        # service need the service identity's session), token, refresh and logout answer
        # UNAVAILABLE while it is down, which callers may retry.
        return await runtime.start(
            AuthServicer(service, keys, forwarder_keys=settings.forwarder_keys),
            core=service,
            verifier=verifier,
            degraded_reads=False,
            listening_note=f" (signing kid {keys.active.kid}, {len(keys.keys)} key(s) in the JWKS)",
        )


#: The process: start, serve until SIGTERM or SIGINT, then stop gracefully.
serve = serving(start)
