"""The composition root: pool → repository → servicer + consumer, on the shared service runtime.

``start(settings)`` builds and starts everything and returns a ``RunningServer`` (tests and the
dev launcher use it); ``serve(settings)`` is the process: start, wait for SIGTERM/SIGINT, stop.
How a service starts, serves, drains and stops is :mod:`portico_common.runtime`'s.

As in the users service, the server starts while PostgreSQL is down (health NOT_SERVING, RPCs
UNAVAILABLE, the consumer retrying with backoff) and recovers when it returns.

Stopping: the consumer stops reading and finishes its current batch first (within ``grace``;
an entry cut off then stays pending and is claimed later: at-least-once), then the runtime's
stop (health NOT_SERVING, keep serving for ``delay``, drain calls within ``grace``, close).
"""

from __future__ import annotations

from portico.audit.v1 import audit_pb2
from portico.audit.v1.audit_pb2_grpc import add_AuditServiceServicer_to_server as add_servicer
from portico_audit.config import AuditSettings
from portico_audit.consumer import AfterCommit, EventConsumer
from portico_audit.errors import ERROR_DOMAIN
from portico_audit.repository import EventRepository
from portico_audit.servicer import AuditServicer
from portico_common import runtime as service_runtime
from portico_common.runtime import BeforeStop, GrpcService, Runtime, serving

#: AuditService as the shared runtime serves it: name, proto service, registration, error domain.
SERVICE = GrpcService(
    "audit", audit_pb2.DESCRIPTOR.services_by_name["AuditService"], add_servicer, ERROR_DOMAIN
)

#: This service, started (``core``: its AuditServicer).
RunningServer = service_runtime.RunningServer[AuditServicer]


async def start(
    settings: AuditSettings, *, after_commit: AfterCommit | None = None
) -> RunningServer:
    """Build the whole service from ``settings``, bind it and start serving (and consuming).

    ``after_commit`` is a test hook of the consumer (see :class:`EventConsumer`).
    """
    async with Runtime(SERVICE, settings) as runtime:
        pool = await runtime.pool()
        client = runtime.valkey(settings.valkey)
        repository = EventRepository(pool, query_timeout_s=settings.postgres.query_timeout_s)
        verifier = await runtime.token_verifier(client, settings)
        before_stop: list[BeforeStop] = []
        if settings.consumer.enabled:
            consumer = EventConsumer(
                repository, client, settings.consumer, after_commit=after_commit
            )
            runtime.background("consumer", consumer.run)
            before_stop.append(consumer.finish)
        servicer = AuditServicer(repository)
        return await runtime.start(
            servicer, core=servicer, verifier=verifier, before_stop=before_stop
        )


#: The process: start, serve until SIGTERM or SIGINT, then stop gracefully.
serve = serving(start, first="consumer finishing its batch, ")
