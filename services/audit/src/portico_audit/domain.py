"""The audit service's data: a recorded event, a listing position and page, and the parser
that turns a stream entry into a record. Imports neither grpc nor asyncpg."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opentelemetry.trace import SpanContext

_MAX_TYPE = 100


class MalformedEventError(ValueError):
    """A stream entry that is not a Portico event (it can never be stored: dead-letter it)."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One event as the audit service stores it."""

    id: uuid.UUID
    type: str
    subject: str
    actor: str
    service: str
    occurred_at: datetime
    payload: Mapping[str, Any] = field(default_factory=dict)
    trace_id: str = ""
    recorded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in the (recorded_at, id) order, newest first: the last event of a page."""

    recorded_at: datetime
    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Page:
    events: list[AuditRecord]
    next_cursor: Cursor | None


def _text(fields: Mapping[str, str], name: str) -> str:
    value = fields.get(name, "")
    return value if isinstance(value, str) else ""


def parse_entry(fields: Mapping[str, str], link: SpanContext | None = None) -> AuditRecord:
    """The record of a stream entry (docs/architecture.md, "Events"); raises
    :class:`MalformedEventError`.

    ``link`` is the span context extracted from the entry's ``traceparent``; its trace id is kept.
    """
    try:
        event_id = uuid.UUID(_text(fields, "id"))
    except ValueError:
        raise MalformedEventError("id is not a UUID") from None
    type_ = _text(fields, "type")
    if not 0 < len(type_) <= _MAX_TYPE:
        raise MalformedEventError(f"type must be 1 to {_MAX_TYPE} characters")
    try:
        occurred_at = datetime.fromisoformat(_text(fields, "occurred_at"))
    except ValueError:
        raise MalformedEventError("occurred_at is not an ISO 8601 time") from None
    if occurred_at.tzinfo is None:
        raise MalformedEventError("occurred_at has no time zone")
    try:
        payload = json.loads(_text(fields, "payload") or "{}")
    except ValueError:
        raise MalformedEventError("payload is not JSON") from None
    if not isinstance(payload, dict):
        raise MalformedEventError("payload is not a JSON object")
    trace_id = format(link.trace_id, "032x") if link is not None and link.is_valid else ""
    return AuditRecord(
        id=event_id,
        type=type_,
        subject=_text(fields, "subject"),
        actor=_text(fields, "actor"),
        service=_text(fields, "service"),
        occurred_at=occurred_at,
        payload=payload,
        trace_id=trace_id,
    )
