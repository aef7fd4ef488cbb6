"""The composition root: pool → repository → cache → servicer → grpc.aio server → health.

``start(settings)`` builds and starts everything and returns a ``RunningServer`` (tests and the
dev launcher use it); ``serve(settings)`` is the process: start, wait for SIGTERM/SIGINT, stop.

The server starts even when PostgreSQL is down: the pool opens connections lazily, health says
NOT_SERVING, RPCs answer UNAVAILABLE at once, and all of it recovers when PostgreSQL returns.

Stopping (``RunningServer.stop``): health NOT_SERVING for every service, keep serving for
``delay`` (``shutdown_delay_s``, so health checkers and balancers notice first), stop accepting
calls and let in-flight ones finish within ``grace``, then close the Valkey client and the pool.

The outbox relay (``portico_common.outbox``, when ``outbox.relay_enabled``) runs as a background
task from start to stop; stopping cancels it first (an interrupted batch stays unpublished, or
is published again by the next relay: at-least-once).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import AsyncExitStack
from functools import partial

import grpc
import protovalidate
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from valkey.asyncio import Valkey

from portico.users.v1 import users_pb2, users_pb2_grpc
from portico_common.access import AccessInterceptor, read_only_methods, rules_of
from portico_common.config import get_session_store_settings
from portico_common.health import DatabaseHealth
from portico_common.metrics import MetricsServer, record_build_info, track_pool
from portico_common.outbox import OutboxRelay
from portico_common.postgres import bind_address, close_pool, open_pool
from portico_common.shutdown import stop_on_signals
from portico_common.tasks import stop_tasks
from portico_common.telemetry import client_interceptors, server_interceptors
from portico_common.tokens import (
    JwksCache,
    SessionStorePolicy,
    TokenVerifier,
    ValkeySessions,
    jwks_from_auth_service,
    jwks_from_file,
)
from portico_users.cache import CachedUsers
from portico_users.config import UsersSettings
from portico_users.interceptors import (
    ErrorInterceptor,
    RequestIdInterceptor,
    ValidationInterceptor,
)
from portico_users.repository import UserRepository, ping_database
from portico_users.servicer import UserServicer

_log = logging.getLogger(__name__)


class RunningServer:
    """A started users server. ``port`` is the port actually bound."""

    def __init__(
        self,
        *,
        server: grpc.aio.Server,
        port: int,
        health: health_aio.HealthServicer,
        monitor: asyncio.Task[None],
        resources: AsyncExitStack,
        relay: asyncio.Task[None] | None = None,
    ) -> None:
        self.server = server
        self.port = port
        self.health = health
        self._monitor = monitor
        self._relay = relay
        self._resources = resources
        self._stopped = False

    async def stop(self, grace: float | None = None, *, delay: float = 0.0) -> None:
        """Health NOT_SERVING; keep serving ``delay`` s; drain up to ``grace`` s; close all."""
        if self._stopped:
            return
        self._stopped = True
        await stop_tasks(task for task in (self._monitor, self._relay) if task is not None)
        await self.health.enter_graceful_shutdown()
        if delay > 0:
            await asyncio.sleep(delay)
        await self.server.stop(grace)
        await self._resources.aclose()
        _log.info("users service stopped")


async def start(settings: UsersSettings) -> RunningServer:
    """Build the whole service from ``settings``, bind it and start serving."""
    pg, vk = settings.postgres, settings.valkey
    dsn = pg.dsn.get_secret_value()
    async with AsyncExitStack() as resources:
        pool = await open_pool(settings.postgres, application_name="portico-users")
        resources.push_async_callback(close_pool, pool)
        resources.callback(track_pool("users", pool))
        client = Valkey.from_url(
            vk.url.get_secret_value(),
            socket_timeout=vk.socket_timeout_s,
            socket_connect_timeout=vk.socket_connect_timeout_s,
        )
        resources.push_async_callback(client.aclose)

        store = CachedUsers(
            UserRepository(pool, query_timeout_s=pg.query_timeout_s),
            client,
            ttl_s=vk.cache_ttl_s,
            tombstone_ttl_s=vk.tombstone_ttl_s,
            key_prefix=vk.key_prefix,
        )
        auth_channel = grpc.aio.insecure_channel(
            settings.auth_target, interceptors=client_interceptors()
        )
        resources.push_async_callback(auth_channel.close)
        jwks = (
            jwks_from_file(settings.jwks_file)
            if settings.jwks_file is not None
            else jwks_from_auth_service(auth_channel)
        )
        session_store = get_session_store_settings()
        sessions = await resources.enter_async_context(
            ValkeySessions(
                client, key_prefix=settings.session_key_prefix, cache_s=session_store.cache_s
            )
        )
        verifier = TokenVerifier(
            JwksCache(jwks, max_age_s=settings.jwks_max_age_s),
            sessions,
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            store_policy=SessionStorePolicy.from_settings(session_store),
        )
        service = users_pb2.DESCRIPTOR.services_by_name["UserService"]
        server = grpc.aio.server(
            interceptors=[
                *server_interceptors(),  # the server span, then RED metrics, outermost
                RequestIdInterceptor(),
                ErrorInterceptor(),
                # before validation: 401 first
                AccessInterceptor(verifier, rules_of([service]), read_only_methods([service])),
                ValidationInterceptor(protovalidate.Validator()),
            ]
        )
        users_pb2_grpc.add_UserServiceServicer_to_server(UserServicer(store), server)
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        reflection.enable_server_reflection(
            (
                users_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        monitor = DatabaseHealth(
            health,
            partial(ping_database, dsn=dsn, time_limit_s=pg.connect_timeout_s),
            interval_s=settings.health_check_interval_s,
            services=(users_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,),
        )
        # Valkey is not probed: the service works without it (reads fall back to PostgreSQL).
        await monitor.probe()  # the first status is known before the first call arrives

        record_build_info("users", "portico-users")
        if settings.metrics_port:  # bound before gRPC, so a taken port fails start-up cleanly
            metrics = MetricsServer(settings.grpc_host, settings.metrics_port)
            resources.push_async_callback(asyncio.to_thread, metrics.stop)
            metrics_at = bind_address(settings.grpc_host, metrics.port)
            _log.info("metrics on http://%s/metrics", metrics_at)
        address = bind_address(settings.grpc_host, settings.grpc_port)
        port = server.add_insecure_port(address)
        await server.start()
        monitor_task = asyncio.create_task(monitor.run(), name="users-health-probe")
        relay_task = None
        if settings.outbox.relay_enabled:
            relay = OutboxRelay(
                pool, client, schema="users", service="users", settings=settings.outbox
            )
            relay_task = asyncio.create_task(relay.run(), name="users-outbox-relay")
        _log.info("users service listening on %s", bind_address(settings.grpc_host, port))
        running = RunningServer(
            server=server,
            port=port,
            health=health,
            monitor=monitor_task,
            resources=resources.pop_all(),
            relay=relay_task,
        )
    return running


async def serve(settings: UsersSettings) -> None:
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
