"""The composition root: pool → repository → cache → servicer, on the shared service runtime.

``start(settings)`` builds and starts everything and returns a ``RunningServer`` (tests and the
dev launcher use it); ``serve(settings)`` is the process: start, wait for SIGTERM/SIGINT, stop.
How a service starts, serves, drains and stops (the interceptor chain, health, reflection,
metrics, background tasks) is :mod:`portico_common.runtime`'s, the same for every service.

The server starts even when PostgreSQL is down: the pool opens connections lazily, health says
NOT_SERVING, RPCs answer UNAVAILABLE at once, and all of it recovers when PostgreSQL returns.
Valkey is not probed: the service works without it (reads fall back to PostgreSQL).

The outbox relay (``portico_common.outbox``, when ``outbox.relay_enabled``) runs as a background
task from start to stop; stopping cancels it (an interrupted batch stays unpublished, or is
published again by the next relay: at-least-once).
"""

from __future__ import annotations

from portico.users.v1 import users_pb2
from portico.users.v1.users_pb2_grpc import add_UserServiceServicer_to_server as add_servicer
from portico_common import runtime as service_runtime
from portico_common.runtime import GrpcService, Runtime, serving
from portico_users.cache import CachedUsers
from portico_users.config import UsersSettings
from portico_users.errors import ERROR_DOMAIN
from portico_users.repository import UserRepository
from portico_users.servicer import UserServicer

#: UserService as the shared runtime serves it: name, proto service, registration, error domain.
SERVICE = GrpcService(
    "users", users_pb2.DESCRIPTOR.services_by_name["UserService"], add_servicer, ERROR_DOMAIN
)

#: This service, started (``core``: its UserServicer).
RunningServer = service_runtime.RunningServer[UserServicer]


async def start(settings: UsersSettings) -> RunningServer:
    """Build the whole service from ``settings``, bind it and start serving."""
    vk = settings.valkey
    async with Runtime(SERVICE, settings) as runtime:
        pool = await runtime.pool()
        client = runtime.valkey(vk)
        # The cache on an instance of its own (evicting) when configured: never beside sessions.
        cache = (
            runtime.valkey(vk.model_copy(update={"url": vk.cache_url})) if vk.cache_url else client
        )
        store = CachedUsers(
            UserRepository(pool, query_timeout_s=settings.postgres.query_timeout_s),
            cache,
            ttl_s=vk.cache_ttl_s,
            tombstone_ttl_s=vk.tombstone_ttl_s,
            key_prefix=vk.key_prefix,
        )
        verifier = await runtime.token_verifier(client, settings)
        runtime.outbox_relay(pool, client, settings.outbox)
        servicer = UserServicer(store)
        return await runtime.start(servicer, core=servicer, verifier=verifier)


#: The process: start, serve until SIGTERM or SIGINT, then stop gracefully.
serve = serving(start)
