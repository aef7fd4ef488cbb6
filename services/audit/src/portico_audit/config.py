"""Settings of the audit service, read from ``AUDIT_*`` environment variables.

Nested groups use ``__``: ``AUDIT_POSTGRES__DSN``, ``AUDIT_VALKEY__URL``,
``AUDIT_CONSUMER__MAX_ATTEMPTS``. Nothing here is built at import time: ``__main__`` calls
``get_settings()``, tests build ``AuditSettings(...)`` themselves.
"""

from __future__ import annotations

import functools
import os
import socket
from typing import Self

from pydantic import BaseModel, Field, model_validator

from portico_common import service_settings
from portico_common.service_settings import Port, PostgresSettings, TokenCheckingSettings

__all__ = [
    "AuditSettings",
    "ConsumerSettings",
    "PostgresSettings",
    "ValkeySettings",
    "get_settings",
]


def default_consumer_name() -> str:
    """``<hostname>-<pid>``: unique per process, stable for its lifetime."""
    return f"{socket.gethostname()}-{os.getpid()}"


class ValkeySettings(service_settings.ValkeySettings):
    """The Valkey that carries the event stream (and the auth service's sessions)."""

    #: Must exceed ``consumer.block_ms``: XREADGROUP BLOCK holds the socket that long.
    socket_timeout_s: float = Field(default=5.0, gt=0)


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


class AuditSettings(TokenCheckingSettings, env_prefix="AUDIT_"):
    """Everything the audit service needs to start (its variables: ``AUDIT_*``)."""

    valkey: ValkeySettings = ValkeySettings()
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)
    #: Its ports, where it listens unless told otherwise.
    grpc_port: Port = 50053
    metrics_port: Port = 9103

    @model_validator(mode="after")
    def _block_within_socket_timeout(self) -> Self:
        if self.consumer.block_ms / 1000 >= self.valkey.socket_timeout_s:
            raise ValueError("consumer.block_ms must be shorter than valkey.socket_timeout_s")
        return self


@functools.cache
def get_settings() -> AuditSettings:
    """The process's settings, read from the environment once."""
    return AuditSettings()
