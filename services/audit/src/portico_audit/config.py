"""Settings of the audit service, read from ``AUDIT_*`` environment variables.

Nested groups use ``__``: ``AUDIT_POSTGRES__DSN``, ``AUDIT_VALKEY__URL``,
``AUDIT_CONSUMER__MAX_ATTEMPTS``. Nothing here is built at import time: ``__main__`` calls
``get_settings()``, tests build ``AuditSettings(...)`` themselves.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_consumer_name() -> str:
    """``<hostname>-<pid>``: unique per process, stable for its lifetime."""
    return f"{socket.gethostname()}-{os.getpid()}"


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
    """The Valkey that carries the event stream (and the auth service's sessions)."""

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    #: Must exceed ``consumer.block_ms``: XREADGROUP BLOCK holds the socket that long.
    socket_timeout_s: float = Field(default=5.0, gt=0)
    socket_connect_timeout_s: float = Field(default=0.5, gt=0)


class ConsumerSettings(BaseModel):
    """The event consumer: a member of a consumer group on the shared event stream."""

    #: Run the consumer in this process (false: this replica only answers ListAuditEvents).
    enabled: bool = True
    #: The Valkey Stream the users and auth services publish to.
    stream: str = "portico:events:v1"
    #: Consumer group; created (``MKSTREAM``, from the stream's first entry) at start.
    group: str = "audit"
    #: This consumer's name in the group; unique per process.
    name: str = Field(default_factory=default_consumer_name, min_length=1)
    #: ``XREADGROUP … BLOCK``: how long one read waits for new entries.
    block_ms: int = Field(default=1000, ge=1)
    #: Entries read (and claimed) per round.
    batch_size: int = Field(default=100, ge=1, le=10_000)
    #: Pending entries idle this long (their consumer died) are taken over (XPENDING, XCLAIM).
    claim_idle_ms: int = Field(default=30_000, ge=1)
    #: How often to look for such entries.
    claim_interval_s: float = Field(default=5.0, gt=0)
    #: An entry whose processing failed on this many deliveries is dead-lettered; so is one
    #: taken over after this many deliveries that were never acknowledged (the process died
    #: while handling it; at least 2 for that case).
    max_attempts: int = Field(default=5, ge=1)
    #: Where poison entries go (with the reason), acknowledged on the main stream.
    dead_letter_stream: str = "portico:events:v1:dead"
    #: ``XADD … MAXLEN ~ n`` on the dead-letter stream.
    dead_letter_maxlen: int = Field(default=100_000, ge=1)
    #: Longest pause between retries while Valkey or PostgreSQL fails.
    max_backoff_s: float = Field(default=5.0, gt=0)
    #: How often to read the group's backlog (``XINFO GROUPS``) into the pending/lag gauges.
    backlog_interval_s: float = Field(default=5.0, gt=0)


class AuditSettings(BaseSettings):
    """Everything the audit service needs to start."""

    model_config = SettingsConfigDict(
        env_prefix="AUDIT_", env_nested_delimiter="__", extra="ignore"
    )

    grpc_host: str = "127.0.0.1"
    #: 0 binds an ephemeral port (tests); the bound one is ``RunningServer.port``.
    grpc_port: int = Field(default=50053, ge=0, le=65535)
    #: After SIGTERM, keep serving this long with health NOT_SERVING; then drain (and let the
    #: consumer finish its batch) for up to shutdown_grace_s.
    shutdown_delay_s: float = Field(default=1.0, ge=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    #: How often the health probe asks PostgreSQL whether it answers.
    health_check_interval_s: float = Field(default=5.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    #: ``json`` (one object per line, for collectors) or ``text`` (one readable line, for humans).
    log_format: Literal["json", "text"] = "json"
    #: Prometheus ``/metrics`` over HTTP on ``grpc_host``; 0 disables it.
    metrics_port: int = Field(default=9103, ge=0, le=65535)
    #: gRPC address of the auth service, asked for the JWKS (signing keys).
    auth_target: str = "127.0.0.1:50052"
    #: Required ``iss`` and ``aud`` of access tokens (the auth service's AUTH_ISSUER/AUDIENCE).
    token_issuer: str = "portico"  # noqa: S105 (a claim value, not a secret)
    token_audience: str = "portico-api"  # noqa: S105
    jwks_max_age_s: float = Field(default=300.0, gt=0)
    #: A JWK Set file to read the keys from instead of asking ``auth_target``.
    jwks_file: Path | None = None
    #: Where the auth service keeps sessions (same Valkey as ``valkey.url``).
    session_key_prefix: str = "portico:auth:v1:"
    postgres: PostgresSettings
    valkey: ValkeySettings = ValkeySettings()
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)

    @model_validator(mode="after")
    def _block_within_socket_timeout(self) -> Self:
        if self.consumer.block_ms / 1000 >= self.valkey.socket_timeout_s:
            raise ValueError("consumer.block_ms must be shorter than valkey.socket_timeout_s")
        return self


@functools.cache
def get_settings() -> AuditSettings:
    """The process's settings, read from the environment once."""
    return AuditSettings()
