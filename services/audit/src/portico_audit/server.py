"""The composition root: pool → repository → servicer + consumer → grpc.aio server → health.

``start(settings)`` builds and starts everything and returns a ``RunningServer`` (tests and the
dev launcher use it); ``serve(settings)`` is the process: start, wait for SIGTERM/SIGINT, stop.

As in the users service, the server starts while PostgreSQL is down (health NOT_SERVING, RPCs
UNAVAILABLE, the consumer retrying with backoff) and recovers when it returns.

Stopping (``RunningServer.stop``): the consumer stops reading and finishes its current batch
(within ``grace``; an entry cut off then stays pending and is claimed later: at-least-once),
health NOT_SERVING, keep serving for ``delay``, drain calls within ``grace``, close everything.
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

from portico.audit.v1 import audit_pb2, audit_pb2_grpc
from portico_audit.config import AuditSettings
from portico_audit.consumer import AfterCommit, EventConsumer
from portico_audit.interceptors import (
    ErrorInterceptor,
    RequestIdInterceptor,
    ValidationInterceptor,
)
from portico_audit.repository import EventRepository, ping_database
from portico_audit.servicer import AuditServicer
from portico_common.access import AccessInterceptor, read_only_methods, rules_of
from portico_common.config import get_session_store_settings
from portico_common.health import DatabaseHealth
from portico_common.metrics import MetricsServer, record_build_info, track_pool
from portico_common.postgres import bind_address, close_pool, open_pool
from portico_common.shutdown import stop_on_signals
from portico_common.tasks import stop_task
from portico_common.telemetry import client_interceptors, server_interceptors
from portico_common.tokens import (
    JwksCache,
    SessionStorePolicy,
    TokenVerifier,
    ValkeySessions,
    jwks_from_auth_service,
    jwks_from_file,
)

_log = logging.getLogger(__name__)

SERVICE = audit_pb2.DESCRIPTOR.services_by_name["AuditService"]


class RunningServer:
    """A started audit server. ``port`` is the port actually bound."""

    def __init__(
        self,
        *,
        server: grpc.aio.Server,
        port: int,
        health: health_aio.HealthServicer,
        monitor: asyncio.Task[None],
        resources: AsyncExitStack,
        consumer: EventConsumer | None = None,
        consuming: asyncio.Task[None] | None = None,
    ) -> None:
        self.server = server
        self.port = port
        self.health = health
        self.consumer = consumer
        self._consuming = consuming
        self._monitor = monitor
        self._resources = resources
        self._stopped = False

    async def stop_consumer(self, grace: float | None = None) -> None:
        """Stop reading; let the current batch finish within ``grace`` s, else cancel it."""
        if self.consumer is None or self._consuming is None:
            return
        self.consumer.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self._consuming), grace)
        except TimeoutError:
            if grace:
                _log.warning("audit consumer did not finish its batch in %ss; cancelling", grace)
            await stop_task(self._consuming)

    async def stop(self, grace: float | None = None, *, delay: float = 0.0) -> None:
        """Consumer off; health NOT_SERVING; keep serving ``delay`` s; drain ``grace`` s."""
        if self._stopped:
            return
        self._stopped = True
        await self.stop_consumer(grace)
        await stop_task(self._monitor)
        await self.health.enter_graceful_shutdown()
        if delay > 0:
            await asyncio.sleep(delay)
        await self.server.stop(grace)
        await self._resources.aclose()
        _log.info("audit service stopped")


async def start(
    settings: AuditSettings, *, after_commit: AfterCommit | None = None
) -> RunningServer:
    """Build the whole service from ``settings``, bind it and start serving (and consuming).

    ``after_commit`` is a test hook of the consumer (see :class:`EventConsumer`).
    """
    pg, vk = settings.postgres, settings.valkey
    dsn = pg.dsn.get_secret_value()
    async with AsyncExitStack() as resources:
        pool = await open_pool(pg, application_name="portico-audit")
        resources.push_async_callback(close_pool, pool)
        resources.callback(track_pool("audit", pool))
        client = Valkey.from_url(
            vk.url.get_secret_value(),
            socket_timeout=vk.socket_timeout_s,
            socket_connect_timeout=vk.socket_connect_timeout_s,
        )
        resources.push_async_callback(client.aclose)
        repository = EventRepository(pool, query_timeout_s=pg.query_timeout_s)

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
        server = grpc.aio.server(
            interceptors=[
                *server_interceptors(),  # the server span, then RED metrics, outermost
                RequestIdInterceptor(),
                ErrorInterceptor(),
                # before validation: 401 first
                AccessInterceptor(verifier, rules_of([SERVICE]), read_only_methods([SERVICE])),
                ValidationInterceptor(protovalidate.Validator()),
            ]
        )
        audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(repository), server)
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        reflection.enable_server_reflection(
            (
                SERVICE.full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        monitor = DatabaseHealth(
            health,
            partial(ping_database, dsn=dsn, time_limit_s=pg.connect_timeout_s),
            interval_s=settings.health_check_interval_s,
            services=(SERVICE.full_name,),
        )
        await monitor.probe()

        record_build_info("audit", "portico-audit")
        if settings.metrics_port:  # bound before gRPC, so a taken port fails start-up cleanly
            metrics = MetricsServer(settings.grpc_host, settings.metrics_port)
            resources.push_async_callback(asyncio.to_thread, metrics.stop)
            _log.info(
                "metrics on http://%s/metrics", bind_address(settings.grpc_host, metrics.port)
            )
        port = server.add_insecure_port(bind_address(settings.grpc_host, settings.grpc_port))
        await server.start()
        monitor_task = asyncio.create_task(monitor.run(), name="audit-health-probe")
        consumer = consuming = None
        if settings.consumer.enabled:
            consumer = EventConsumer(
                repository, client, settings.consumer, after_commit=after_commit
            )
            consuming = asyncio.create_task(consumer.run(), name="audit-consumer")
        _log.info("audit service listening on %s", bind_address(settings.grpc_host, port))
        running = RunningServer(
            server=server,
            port=port,
            health=health,
            monitor=monitor_task,
            resources=resources.pop_all(),
            consumer=consumer,
            consuming=consuming,
        )
    return running


async def serve(settings: AuditSettings) -> None:
    """Run the service until SIGTERM or SIGINT, then stop gracefully."""
    running = await start(settings)
    gc.collect()
    gc.freeze()
    await stop_on_signals(
        stop=partial(running.stop, settings.shutdown_grace_s, delay=settings.shutdown_delay_s),
        force=partial(running.server.stop, None),
        announce=partial(
            _log.info,
            "stopping: consumer finishing its batch, health NOT_SERVING, still serving for %ss,"
            " then draining for up to %ss",
            settings.shutdown_delay_s,
            settings.shutdown_grace_s,
        ),
    )
