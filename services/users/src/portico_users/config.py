"""Settings of the users service, read from ``USERS_*`` environment variables.

The settings every service has (address, stop, logs, PostgreSQL, token checks) are declared once
in :mod:`portico_common.service_settings`; this adds the read-through cache's and the events'.
Nested groups use ``__``: ``USERS_POSTGRES__DSN``, ``USERS_VALKEY__URL``,
``USERS_VALKEY__CACHE_TTL_S``.
Nothing here is built at import time: ``__main__`` calls ``get_settings()``, tests build
``UsersSettings(...)`` themselves.
"""

from __future__ import annotations

import functools

from pydantic import Field

from portico_common import service_settings
from portico_common.outbox import OutboxSettings
from portico_common.service_settings import Port, PostgresSettings, TokenCheckingSettings
from portico_common.valkey import ValkeyUrl

__all__ = ["PostgresSettings", "UsersSettings", "ValkeySettings", "get_settings"]


class ValkeySettings(service_settings.ValkeySettings):
    """The Valkey read-through cache: an optimization; when it is down, reads use PostgreSQL."""

    #: Lifetime of a cached user.
    cache_ttl_s: float = Field(default=300.0, gt=0)
    #: Lifetime of the tombstone a delete leaves; must exceed the longest read (query_timeout_s).
    tombstone_ttl_s: float = Field(default=60.0, gt=0)
    socket_timeout_s: float = Field(default=0.25, gt=0)
    socket_connect_timeout_s: float = Field(default=0.25, gt=0)
    key_prefix: str = "portico:users:v1:"
    #: The cache's own Valkey (bounded, evicting least recently used keys), apart from ``url``
    #: (sessions and events: bounded, never evicting). Unset: the cache lives on ``url`` too.
    cache_url: ValkeyUrl | None = None


class UsersSettings(TokenCheckingSettings, env_prefix="USERS_"):
    """Everything the users service needs to start (its variables: ``USERS_*``)."""

    valkey: ValkeySettings = ValkeySettings()
    #: Events: the outbox relay and the stream it publishes to (``USERS_OUTBOX__*``).
    outbox: OutboxSettings = OutboxSettings()
    #: Its ports, where it listens unless told otherwise.
    grpc_port: Port = 50051
    metrics_port: Port = 9101


@functools.cache
def get_settings() -> UsersSettings:
    """The process's settings, read from the environment once."""
    return UsersSettings()
