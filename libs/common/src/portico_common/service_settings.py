"""The settings every gRPC service has, declared once; each service adds its own and its prefix.

A service's settings class derives from :class:`ServiceSettings` (or
:class:`TokenCheckingSettings` when it checks access tokens issued by the auth service), sets its
``env_prefix`` (``USERS_``, ``AUTH_``, ``AUDIT_``; the rest of the configuration is inherited)
and the defaults that differ (its ports, typed :data:`Port`), and adds its own groups. Nested
groups use ``__``: ``USERS_POSTGRES__DSN``, ``USERS_VALKEY__URL``.
Nothing here is read at import time: each ``__main__`` calls its ``get_settings()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: A TCP port to bind; 0 picks a free one (the gRPC port) or turns the endpoint off (metrics).
Port = Annotated[int, Field(ge=0, le=65535)]


class PostgresSettings(BaseModel):
    """The PostgreSQL pool. ``dsn`` is an asyncpg DSN; it may hold a password, so it is secret."""

    dsn: SecretStr
    pool_min: int = Field(default=1, ge=0)
    pool_max: int = Field(default=10, ge=1)
    #: Time limit for opening one connection.
    connect_timeout_s: float = Field(default=3.0, gt=0)
    #: Longest a database call may take when the caller sent no (or a longer) deadline.
    query_timeout_s: float = Field(default=10.0, gt=0)
    #: Server-side ``statement_timeout`` (a backstop when the client vanished), milliseconds.
    statement_timeout_ms: int = Field(default=30_000, ge=0)


class ValkeySettings(BaseModel):
    """A Valkey client: where, and how long one command (and one connect) may take.

    Tight by design (a session check or a cache read fails fast and the caller gets a clear
    answer instead of waiting); each service sets the defaults its use needs.
    """

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    socket_timeout_s: float = Field(default=0.5, gt=0)
    socket_connect_timeout_s: float = Field(default=0.5, gt=0)


class ServiceSettings(BaseSettings):
    """What every grpc.aio service process needs: its address, its stop, its logs, PostgreSQL."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore")

    grpc_host: str = "127.0.0.1"
    #: 0 binds an ephemeral port (tests); the bound one is ``RunningServer.port``.
    grpc_port: Port = 0
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
    metrics_port: Port = 0
    #: A call slower than this (seconds) whose trace head sampling dropped still gets its span
    #: (tail capture, docs/telemetry.md); the service's latency-SLO threshold. 0: only failures.
    trace_slow_s: float = Field(default=0.1, ge=0)
    postgres: PostgresSettings


class TokenCheckingSettings(ServiceSettings):
    """A service that checks the access tokens the auth service issues (users, audit)."""

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
