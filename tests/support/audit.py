"""Helpers for the audit service's integration tests: settings and well-formed stream entries."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from portico_audit.config import AuditSettings, ConsumerSettings, PostgresSettings, ValkeySettings
from tests.support.stores import component_valkey_url, service_database_url
from tests.support.timeouts import POSTGRES_CONNECT_TIMEOUT_S, VALKEY_TIMEOUT_S
from tests.support.tokens import signing_material

STREAM = "portico:events:v1"
DEAD = "portico:events:v1:dead"


def audit_settings(
    *, database_url: str, valkey_url: str, consumer: dict[str, Any] | None = None, **overrides: Any
) -> AuditSettings:
    """An in-process server on an ephemeral loopback port; a fast consumer."""
    values: dict[str, Any] = {
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_port": 0,
        "shutdown_grace_s": 2.0,
        "health_check_interval_s": 0.2,
        "postgres": PostgresSettings(
            dsn=SecretStr(service_database_url(database_url, "audit")),
            connect_timeout_s=POSTGRES_CONNECT_TIMEOUT_S,
            query_timeout_s=5.0,
        ),
        "valkey": ValkeySettings(
            url=SecretStr(component_valkey_url(valkey_url, "audit")),
            socket_timeout_s=VALKEY_TIMEOUT_S,
            socket_connect_timeout_s=VALKEY_TIMEOUT_S,
        ),
        "jwks_file": signing_material().jwks_file,
        "consumer": ConsumerSettings(
            **({"block_ms": 100, "claim_interval_s": 0.1, "claim_idle_ms": 200} | (consumer or {}))
        ),
    }
    values.update(overrides)
    return AuditSettings(**values)


def entry(
    *,
    event_id: str | None = None,
    type_: str = "user.created",
    subject: str | None = None,
    traceparent: str = "",
    **fields: str,
) -> dict[str, str]:
    """A stream entry as the outbox relay writes it (docs/architecture.md, "Events")."""
    return {
        "id": event_id or str(uuid.uuid4()),
        "type": type_,
        "subject": subject or str(uuid.uuid4()),
        "actor": "",
        "occurred_at": datetime.now(UTC).isoformat(),
        "service": "users",
        "seq": "1",
        "payload": json.dumps({"email": "a@example.com"}),
        "traceparent": traceparent,
        **fields,
    }
