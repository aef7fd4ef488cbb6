"""Settings of the users service, read from ``USERS_*`` environment variables.

Nested groups use ``__``: ``USERS_POSTGRES__DSN``, ``USERS_VALKEY__URL``,
``USERS_VALKEY__CACHE_TTL_S``.
Nothing here is built at import time: ``__main__`` calls ``get_settings()``, tests build
``UsersSettings(...)`` themselves.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from portico_common.outbox import OutboxSettings


class PostgresSettings(BaseModel):
    """The PostgreSQL pool. ``dsn`` is an asyncpg DSN; it may hold a password, so it is secret."""

    dsn: SecretStr
    pool_min: int = Field(default=1, ge=0)
    pool_max: int = Field(default=10, ge=1)
    #: Time limit for opening one connection.
    connect_timeout_s: float = Field(default=3.0, gt=0)
    #: Longest a database call may take when the caller sent no deadline.
    query_timeout_s: float = Field(default=10.0, gt=0)
    #: Server-side ``statement_timeout`` (a backstop when the client vanished), milliseconds.
    statement_timeout_ms: int = Field(default=30_000, ge=0)


class ValkeySettings(BaseModel):
    """The Valkey read-through cache: an optimization; when it is down, reads use PostgreSQL."""

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    #: Lifetime of a cached user.
    cache_ttl_s: float = Field(default=300.0, gt=0)
    #: Lifetime of the tombstone a delete leaves; must exceed the longest read (query_timeout_s).
    tombstone_ttl_s: float = Field(default=60.0, gt=0)
    socket_timeout_s: float = Field(default=0.25, gt=0)
    socket_connect_timeout_s: float = Field(default=0.25, gt=0)
    key_prefix: str = "portico:users:v1:"


class UsersSettings(BaseSettings):
    """Everything the users service needs to start."""

    model_config = SettingsConfigDict(
        env_prefix="USERS_", env_nested_delimiter="__", extra="ignore"
    )

    grpc_host: str = "127.0.0.1"
    #: 0 binds an ephemeral port (tests); the bound one is ``RunningServer.port``.
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    #: After SIGTERM, keep serving this long with health NOT_SERVING, so balancers and health
    #: checkers notice before new calls are refused; then drain for up to shutdown_grace_s.
    shutdown_delay_s: float = Field(default=1.0, ge=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    #: How often the health probe asks PostgreSQL whether it answers.
    health_check_interval_s: float = Field(default=5.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    #: ``json`` (one object per line, for collectors) or ``text`` (one readable line, for humans).
    log_format: Literal["json", "text"] = "json"
    #: Prometheus ``/metrics`` over HTTP on ``grpc_host``; 0 disables it.
    metrics_port: int = Field(default=9101, ge=0, le=65535)
    #: gRPC address of the auth service, asked for the JWKS (signing keys) on first use and
    #: then every ``jwks_max_age_s``; never per call.
    auth_target: str = "127.0.0.1:50052"
    #: Required ``iss`` and ``aud`` of access tokens (the auth service's AUTH_ISSUER/AUDIENCE).
    token_issuer: str = "portico"  # noqa: S105 (a claim value, not a secret)
    token_audience: str = "portico-api"  # noqa: S105
    jwks_max_age_s: float = Field(default=300.0, gt=0)
    #: A JWK Set file (e.g. a mounted ConfigMap) to read the keys from instead of asking
    #: ``auth_target``; it is read again every ``jwks_max_age_s``.
    jwks_file: Path | None = None
    #: Where the auth service keeps sessions: a token is alive while
    #: ``EXISTS <session_key_prefix>session:<sid>`` (same Valkey as ``valkey.url``).
    session_key_prefix: str = "portico:auth:v1:"
    postgres: PostgresSettings
    valkey: ValkeySettings = ValkeySettings()
    #: Events: the outbox relay and the stream it publishes to (``USERS_OUTBOX__*``).
    outbox: OutboxSettings = OutboxSettings()


@functools.cache
def get_settings() -> UsersSettings:
    """The process's settings, read from the environment once."""
    return UsersSettings()
