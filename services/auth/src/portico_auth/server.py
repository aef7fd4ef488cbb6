"""The composition root: keys, pool, Valkey, users channel → AuthService → grpc.aio server.

``start(settings)`` builds and starts everything and returns a ``RunningServer`` (tests and the
dev launcher use it); ``serve(settings)`` is the process: start, wait for SIGTERM/SIGINT, stop.

Start-up refuses bad signing-key settings (``KeyConfigError``: production without key files, an
unreadable or non-Ed25519 file, an unknown ``AUTH_ACTIVE_KID``) before binding anything. Like the
users service it starts while PostgreSQL is down (health NOT_SERVING until it answers).

Background tasks: the health probe, the sign-up reconciler (every
``signup.reconcile_interval_s``, see ``service.py``) and the outbox relay (``auth.outbox`` to the
event stream, when ``outbox.relay_enabled``; ``portico_common.outbox``).

Stopping (``RunningServer.stop``): health NOT_SERVING, keep serving for ``delay``, stop
accepting calls and let in-flight ones finish within ``grace``, then close the users channel,
Valkey and the pool.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from functools import partial

import grpc
import protovalidate
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from valkey.asyncio import Valkey

from portico.auth.v1 import auth_pb2, auth_pb2_grpc
from portico_auth.config import AuthSettings
from portico_auth.identity import ServiceIdentity
from portico_auth.interceptors import (
    ErrorInterceptor,
    RequestIdInterceptor,
    ValidationInterceptor,
)
from portico_auth.keys import KeyRing, load_key_ring
from portico_auth.passwords import Passwords
from portico_auth.repository import CredentialRepository, ping_database
from portico_auth.service import AuthService
from portico_auth.servicer import AuthServicer
from portico_auth.sessions import Sessions
from portico_auth.throttle import LoginThrottle
from portico_auth.tokens import TokenIssuer
from portico_auth.users_client import UsersClient
from portico_common.access import AccessInterceptor, rules_of
from portico_common.health import DatabaseHealth
from portico_common.metrics import MetricsServer, record_build_info, track_pool
from portico_common.outbox import OutboxRelay
from portico_common.postgres import bind_address, close_pool, open_pool
from portico_common.shutdown import stop_on_signals
from portico_common.tasks import stop_tasks
from portico_common.telemetry import client_interceptors, server_interceptors
from portico_common.tokens import Jwk, JwksCache, TokenVerifier, ValkeySessions

_log = logging.getLogger(__name__)


class RunningServer:
    """A started auth server. ``port`` is the port actually bound; ``service`` the core."""

    def __init__(
        self,
        *,
        server: grpc.aio.Server,
        port: int,
        health: health_aio.HealthServicer,
        service: AuthService,
        tasks: list[asyncio.Task[None]],
        resources: AsyncExitStack,
    ) -> None:
        self.server = server
        self.port = port
        self.health = health
        self.service = service
        self._tasks = tasks
        self._resources = resources
        self._stopped = False

    async def stop(self, grace: float | None = None, *, delay: float = 0.0) -> None:
        """Health NOT_SERVING; keep serving ``delay`` s; drain up to ``grace`` s; close all."""
        if self._stopped:
            return
        self._stopped = True
        await stop_tasks(self._tasks)
        await self.health.enter_graceful_shutdown()
        if delay > 0:
            await asyncio.sleep(delay)
        await self.server.stop(grace)
        await self._resources.aclose()
        _log.info("auth service stopped")


def _own_jwks(keys: KeyRing) -> Callable[[], Awaitable[Sequence[Jwk]]]:
    """The JWKS of this service's own keys, for its verifier (no network involved)."""

    async def fetch() -> Sequence[Jwk]:
        return [key.jwk() for key in keys.keys]

    return fetch


async def _reconcile_forever(service: AuthService, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            ended = await service.reconcile()
        except Exception as exc:  # PostgreSQL down: try again next round
            _log.warning(
                "sign-up reconciliation failed (%s: %s); retrying later", type(exc).__name__, exc
            )
        else:
            if ended:
                _log.info("reconciled %d pending sign-up(s)", ended)


async def _end_identity(identity: ServiceIdentity) -> None:
    try:
        await identity.close()
    except Exception as exc:  # Valkey down at shutdown: the session expires by itself
        _log.warning(
            "could not end the service identity's session (%s: %s); it expires by itself",
            type(exc).__name__,
            exc,
        )


async def start(settings: AuthSettings) -> RunningServer:
    """Build the whole service from ``settings``, bind it and start serving."""
    keys = load_key_ring(
        settings.signing_key_files,
        active_kid=settings.active_kid,
        environment=settings.environment,
    )
    pg, vk = settings.postgres, settings.valkey
    dsn = pg.dsn.get_secret_value()
    async with AsyncExitStack() as resources:
        pool = await open_pool(pg, application_name="portico-auth")
        resources.push_async_callback(close_pool, pool)
        resources.callback(track_pool("auth", pool))
        client = Valkey.from_url(
            vk.url.get_secret_value(),
            socket_timeout=vk.socket_timeout_s,
            socket_connect_timeout=vk.socket_connect_timeout_s,
        )
        resources.push_async_callback(client.aclose)
        users_channel = grpc.aio.insecure_channel(
            settings.users_target, interceptors=client_interceptors()
        )
        resources.push_async_callback(users_channel.close)

        tokens = TokenIssuer(
            keys,
            issuer=settings.issuer,
            audience=settings.audience,
            ttl_s=settings.access_token_ttl_s,
        )
        sessions = Sessions(client, key_prefix=vk.key_prefix, ttl_s=settings.refresh_token_ttl_s)
        identity = ServiceIdentity(tokens, sessions)
        resources.push_async_callback(_end_identity, identity)
        service = AuthService(
            credentials=CredentialRepository(pool, query_timeout_s=pg.query_timeout_s),
            users=UsersClient(users_channel, identity, timeout_s=settings.signup.users_timeout_s),
            passwords=await asyncio.to_thread(Passwords, settings.argon2),
            sessions=sessions,
            throttle=LoginThrottle(client, settings.throttle, key_prefix=vk.key_prefix),
            tokens=tokens,
            admin_emails=settings.admin_emails,
            pending_timeout_s=settings.signup.pending_timeout_s,
        )
        # Every AuthService RPC is public (see auth.proto); the interceptor still closes any
        # RPC added later without a rule, with the same verifier the other services use.
        verifier = TokenVerifier(
            JwksCache(_own_jwks(keys)),
            ValkeySessions(client, key_prefix=vk.key_prefix),
            issuer=settings.issuer,
            audience=settings.audience,
        )
        server = grpc.aio.server(
            interceptors=[
                *server_interceptors(),  # the server span, then RED metrics, outermost
                RequestIdInterceptor(),
                ErrorInterceptor(),
                AccessInterceptor(
                    verifier, rules_of([auth_pb2.DESCRIPTOR.services_by_name["AuthService"]])
                ),
                ValidationInterceptor(protovalidate.Validator()),
            ]
        )
        auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(service, keys), server)
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        reflection.enable_server_reflection(
            (
                auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        monitor = DatabaseHealth(
            health,
            partial(ping_database, dsn=dsn, time_limit_s=pg.connect_timeout_s),
            interval_s=settings.health_check_interval_s,
            services=(auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,),
        )
        # Valkey is not probed: JWKS works without it; sign-up (whose calls to the users
        # service need the service identity's session), token, refresh and logout answer
        # UNAVAILABLE while it is down, which callers may retry.
        await monitor.probe()  # the first status is known before the first call arrives

        record_build_info("auth", "portico-auth")
        if settings.metrics_port:  # bound before gRPC, so a taken port fails start-up cleanly
            metrics = MetricsServer(settings.grpc_host, settings.metrics_port)
            resources.push_async_callback(asyncio.to_thread, metrics.stop)
            metrics_at = bind_address(settings.grpc_host, metrics.port)
            _log.info("metrics on http://%s/metrics", metrics_at)
        address = bind_address(settings.grpc_host, settings.grpc_port)
        port = server.add_insecure_port(address)
        await server.start()
        tasks = [
            asyncio.create_task(monitor.run(), name="auth-health-probe"),
            asyncio.create_task(
                _reconcile_forever(service, settings.signup.reconcile_interval_s),
                name="auth-signup-reconciler",
            ),
        ]
        if settings.outbox.relay_enabled:
            relay = OutboxRelay(
                pool, client, schema="auth", service="auth", settings=settings.outbox
            )
            tasks.append(asyncio.create_task(relay.run(), name="auth-outbox-relay"))
        _log.info(
            "auth service listening on %s (signing kid %s, %d key(s) in the JWKS)",
            bind_address(settings.grpc_host, port),
            keys.active.kid,
            len(keys.keys),
        )
        running = RunningServer(
            server=server,
            port=port,
            health=health,
            service=service,
            tasks=tasks,
            resources=resources.pop_all(),
        )
    return running


async def serve(settings: AuthSettings) -> None:
    """Run the service until SIGTERM or SIGINT, then stop gracefully."""
    running = await start(settings)
    # Everything built so far lives as long as the process: keep the collector off it.
    gc.collect()
    gc.freeze()
    # Graceful stop on SIGTERM/SIGINT; a second signal cancels in-flight calls and exits 1.
    await stop_on_signals(
        stop=partial(running.stop, settings.shutdown_grace_s, delay=settings.shutdown_delay_s),
        force=partial(running.server.stop, None),
        announce=partial(
            _log.info,
            "stopping: health NOT_SERVING, still serving for %ss, then draining for up to %ss",
            settings.shutdown_delay_s,
            settings.shutdown_grace_s,
        ),
    )
