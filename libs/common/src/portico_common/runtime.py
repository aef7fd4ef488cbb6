"""One runtime for every grpc.aio service process: build, start, serve, drain, stop.

A service's ``server.py`` is its composition root and nothing more: it declares the service
(:class:`GrpcService`: its name, its proto service, how its servicer is registered, its error
domain) and builds it::

    async def start(settings: UsersSettings) -> RunningServer:
        async with Runtime(SERVICE, settings) as runtime:
            pool = await runtime.pool()
            client = runtime.valkey(settings.valkey)
            verifier = await runtime.token_verifier(client, settings)
            servicer = UserServicer(...)
            return await runtime.start(servicer, core=servicer, verifier=verifier)

    serve = serving(start)

What the :class:`Runtime` opens (the pool, Valkey clients, channels, the session listener) is
closed by the stop, last opened first; a start that fails closes it at once.
:meth:`Runtime.start` builds the server with the one interceptor chain (tracing and RED
metrics, request id and call deadline, error mapping, access rules, protovalidate), the
standard health service (following PostgreSQL, probed every ``health_check_interval_s``) and
reflection; binds the metrics endpoint, then the gRPC port; starts the health probe and the
service's background tasks (:meth:`Runtime.outbox_relay` is one); and returns a
:class:`RunningServer`. :func:`serve` is the process: ``gc.freeze()``, wait for SIGTERM/SIGINT,
stop gracefully (a second signal forces); :func:`serving` makes a service's ``serve(settings)``
of its ``start``.

Stopping (:meth:`RunningServer.stop`): the service's before-stop hooks (the audit consumer
finishing its batch), every background task (within a budget, whatever it awaits:
:mod:`portico_common.tasks`), health NOT_SERVING, keep serving for ``delay`` so balancers
notice, stop accepting calls and let in-flight ones finish within ``grace``, close everything.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, Generic, TypeVar

import asyncpg
import grpc
import protovalidate
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from valkey.asyncio import Valkey

from portico_common.access import AccessInterceptor, read_only_methods, rules_of
from portico_common.errors import InvalidArgument, ServiceError, status_of
from portico_common.health import DatabaseHealth
from portico_common.interceptors import (
    ErrorInterceptor,
    RequestIdInterceptor,
    ValidationInterceptor,
)
from portico_common.metrics import MetricsServer, record_build_info, track_pool
from portico_common.outbox import OutboxRelay, OutboxSettings
from portico_common.postgres import bind_address, close_pool, open_pool, ping
from portico_common.service_settings import ServiceSettings, TokenCheckingSettings, ValkeySettings
from portico_common.shutdown import stop_on_signals
from portico_common.tasks import stop_tasks
from portico_common.telemetry import client_interceptors, server_interceptors
from portico_common.tokens import (
    FetchJwks,
    TokenVerifier,
    jwks_from_auth_service,
    jwks_from_file,
    open_token_verifier,
)

_log = logging.getLogger(__name__)

Core = TypeVar("Core")
Servicer = TypeVar("Servicer")
Settings = TypeVar("Settings", bound=ServiceSettings)

#: Something to await before the background tasks stop, given the drain budget (``grace``).
BeforeStop = Callable[[float | None], Awaitable[None]]


class RunningServer(Generic[Core]):
    """A started service. ``port`` is the port actually bound; ``core`` is the service's own
    object (its servicer, or the domain service behind it) for tests and tools."""

    def __init__(
        self,
        *,
        name: str,
        core: Core,
        server: grpc.aio.Server,
        port: int,
        health: health_aio.HealthServicer,
        tasks: Sequence[asyncio.Task[None]],
        resources: AsyncExitStack,
        before_stop: Sequence[BeforeStop] = (),
    ) -> None:
        self.name = name
        self.core = core
        self.server = server
        self.port = port
        self.health = health
        self._tasks = tuple(tasks)
        self._resources = resources
        self._before_stop = tuple(before_stop)
        self._stopped = False

    async def stop(self, grace: float | None = None, *, delay: float = 0.0) -> None:
        """Health NOT_SERVING; keep serving ``delay`` s; drain up to ``grace`` s; close all."""
        if self._stopped:
            return
        self._stopped = True
        for hook in self._before_stop:
            await hook(grace)
        await stop_tasks(self._tasks)
        await self.health.enter_graceful_shutdown()
        if delay > 0:
            await asyncio.sleep(delay)
        await self.server.stop(grace)
        await self._resources.aclose()
        _log.info("%s service stopped", self.name)


@dataclass(frozen=True, slots=True)
class GrpcService(Generic[Servicer]):
    """One service as the runtime serves it.

    ``name`` (``users``) names its logs, metrics, tasks and PostgreSQL ``application_name``
    (``portico-<name>``); ``descriptor`` is its proto service (access rules, health, reflection);
    ``add_servicer`` the generated ``add_<Service>Servicer_to_server``; ``error_domain`` the
    ``google.rpc.ErrorInfo.domain`` of its errors.
    """

    name: str
    descriptor: ServiceDescriptor
    add_servicer: Callable[[Servicer, grpc.aio.Server], None]
    error_domain: str


#: One bound for a call's metadata, the gateway's header bound (``GATEWAY_MAX_HEADER_BYTES``).
#: gRPC's own defaults are a soft limit of 8 KiB and a hard one above it, and between the two it
#: refuses a call at random (RESOURCE_EXHAUSTED): an 8 KiB malformed token was answered
#: UNAUTHENTICATED or RESOURCE_EXHAUSTED by chance. With both limits equal, metadata up to the
#: bound always reaches the interceptors, and more is always refused.
MAX_METADATA_BYTES = 16 * 1024
SERVER_OPTIONS = (
    ("grpc.max_metadata_size", MAX_METADATA_BYTES),
    ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
)


class Runtime(Generic[Servicer]):
    """Builds one service process; see the module docstring."""

    def __init__(self, service: GrpcService[Servicer], settings: ServiceSettings) -> None:
        self.service = service
        self.name = service.name
        self.settings = settings
        self.resources = AsyncExitStack()
        self._background: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = []

    async def __aenter__(self) -> Runtime[Servicer]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # After start() everything belongs to the RunningServer (pop_all left this empty).
        await self.resources.__aexit__(exc_type, exc, traceback)

    async def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        """The PostgreSQL pool (``settings.postgres``), tracked by the pool gauges."""
        pool = await open_pool(self.settings.postgres, application_name=f"portico-{self.name}")
        self.resources.push_async_callback(close_pool, pool)
        self.resources.callback(track_pool(self.name, pool))
        return pool

    def valkey(self, settings: ValkeySettings) -> Valkey:
        """A Valkey client with the timeouts of ``settings``."""
        client: Valkey = Valkey.from_url(
            settings.url.get_secret_value(),
            socket_timeout=settings.socket_timeout_s,
            socket_connect_timeout=settings.socket_connect_timeout_s,
        )
        self.resources.push_async_callback(client.aclose)
        return client

    def channel(self, target: str) -> grpc.aio.Channel:
        """A channel to another service, traced like every outgoing call."""
        channel = grpc.aio.insecure_channel(target, interceptors=client_interceptors())
        self.resources.push_async_callback(channel.close)
        return channel

    async def token_verifier(
        self, client: Valkey, settings: TokenCheckingSettings, *, jwks: FetchJwks | None = None
    ) -> TokenVerifier:
        """The access-token verifier: keys from ``jwks`` (default: the JWK Set file, or the
        auth service's GetJwks), sessions in ``client``'s Valkey."""
        if jwks is None:
            jwks = (
                jwks_from_file(settings.jwks_file)
                if settings.jwks_file is not None
                else jwks_from_auth_service(self.channel(settings.auth_target))
            )
        return await open_token_verifier(
            self.resources,
            client,
            jwks,
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            session_key_prefix=settings.session_key_prefix,
            jwks_max_age_s=settings.jwks_max_age_s,
        )

    def background(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``run()`` as a task from start to stop (named ``<service>-<name>``)."""
        self._background.append((name, run))

    def outbox_relay(
        self, pool: asyncpg.Pool[asyncpg.Record], client: Valkey, settings: OutboxSettings
    ) -> None:
        """Publish the service's outbox (``<name>.outbox``) to the event stream from start to
        stop, when ``settings.relay_enabled`` (:mod:`portico_common.outbox`)."""
        if settings.relay_enabled:
            relay = OutboxRelay(
                pool, client, schema=self.name, service=self.name, settings=settings
            )
            self.background("outbox-relay", relay.run)

    async def start(
        self,
        servicer: Servicer,
        *,
        core: Core,
        verifier: TokenVerifier,
        errors: type[ServiceError] = ServiceError,
        degraded_reads: bool = True,
        before_stop: Sequence[BeforeStop] = (),
        listening_note: str = "",
    ) -> RunningServer[Core]:
        """Build the server, bind it, start serving and the background tasks; see the module.

        ``core`` is what the :class:`RunningServer` hands to tests and tools (the servicer, or
        the domain service behind it); ``errors`` is the base of the exceptions turned into
        statuses (in the service's error domain); ``degraded_reads``: read-only methods may be
        served on a validly signed token while the session store is down
        (``PORTICO_SESSION_STORE_FAIL_MODE``).
        """
        settings = self.settings
        service = self.service.descriptor
        server = grpc.aio.server(
            interceptors=[
                # the server span, then RED metrics and the tail capture, outermost
                *server_interceptors(slow_s=settings.trace_slow_s),
                RequestIdInterceptor(),  # request id and the caller's deadline, for the logs
                ErrorInterceptor(errors, partial(status_of, domain=self.service.error_domain)),
                # before validation: 401 first
                AccessInterceptor(
                    verifier,
                    rules_of([service]),
                    read_only_methods([service]) if degraded_reads else (),
                ),
                ValidationInterceptor(protovalidate.Validator(), InvalidArgument.from_pairs),
            ],
            options=SERVER_OPTIONS,
        )
        self.service.add_servicer(servicer, server)
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        reflection.enable_server_reflection(
            (
                service.full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        pg = settings.postgres
        monitor = DatabaseHealth(
            health,
            partial(ping, dsn=pg.dsn.get_secret_value(), time_limit_s=pg.connect_timeout_s),
            interval_s=settings.health_check_interval_s,
            services=(service.full_name,),
        )
        await monitor.probe()  # the first status is known before the first call arrives

        record_build_info(self.name, f"portico-{self.name}")
        if settings.metrics_port:  # bound before gRPC, so a taken port fails start-up cleanly
            metrics = MetricsServer(settings.grpc_host, settings.metrics_port)
            self.resources.push_async_callback(asyncio.to_thread, metrics.stop)
            _log.info(
                "metrics on http://%s/metrics", bind_address(settings.grpc_host, metrics.port)
            )
        port = server.add_insecure_port(bind_address(settings.grpc_host, settings.grpc_port))
        await server.start()
        tasks = [asyncio.create_task(monitor.run(), name=f"{self.name}-health-probe")]
        tasks += [
            asyncio.create_task(run(), name=f"{self.name}-{name}") for name, run in self._background
        ]
        _log.info(
            "%s service listening on %s%s",
            self.name,
            bind_address(settings.grpc_host, port),
            listening_note,
        )
        return RunningServer(
            name=self.name,
            core=core,
            server=server,
            port=port,
            health=health,
            tasks=tasks,
            resources=self.resources.pop_all(),
            before_stop=before_stop,
        )


async def serve(running: RunningServer[Any], settings: ServiceSettings, *, first: str = "") -> None:
    """Run ``running`` until SIGTERM or SIGINT, then stop gracefully (``first``: what the stop
    does before the health change, for the announcement)."""
    # Everything built so far lives as long as the process: keep the collector off it.
    gc.collect()
    gc.freeze()
    # Graceful stop on SIGTERM/SIGINT; a second signal cancels in-flight calls and exits 1.
    await stop_on_signals(
        stop=partial(running.stop, settings.shutdown_grace_s, delay=settings.shutdown_delay_s),
        force=partial(running.server.stop, None),
        announce=partial(
            _log.info,
            "stopping: %shealth NOT_SERVING, still serving for %ss, then draining for up to %ss",
            first,
            settings.shutdown_delay_s,
            settings.shutdown_grace_s,
        ),
    )


def serving(
    start: Callable[[Settings], Awaitable[RunningServer[Any]]], *, first: str = ""
) -> Callable[[Settings], Coroutine[Any, Any, None]]:
    """A service's ``serve(settings)``: ``start(settings)``, then :func:`serve` (``first``: what
    the stop does before the health change, for the announcement)."""

    async def serve_service(settings: Settings) -> None:
        await serve(await start(settings), settings, first=first)

    return serve_service
