"""AuditServicer: proto ↔ domain translation only (the repository does the work)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from portico.audit.v1 import audit_pb2, audit_pb2_grpc
from portico_audit.domain import AuditRecord
from portico_audit.page_token import PAGE_TOKENS
from portico_audit.repository import EventRepository

Context = grpc.aio.ServicerContext[Any, Any]

DEFAULT_PAGE_SIZE = 20


def _timestamp(value: Any) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def event_to_proto(record: AuditRecord) -> audit_pb2.AuditEvent:
    """The API form of a stored event."""
    payload = struct_pb2.Struct()
    payload.update(dict(record.payload))
    event = audit_pb2.AuditEvent(
        id=str(record.id),
        type=record.type,
        subject=record.subject,
        actor=record.actor,
        service=record.service,
        occurred_at=_timestamp(record.occurred_at),
        payload=payload,
        trace_id=record.trace_id,
    )
    if record.recorded_at is not None:
        event.recorded_at.CopyFrom(_timestamp(record.recorded_at))
    return event


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """``portico.audit.v1.AuditService`` over an :class:`EventRepository`."""

    def __init__(self, repository: EventRepository) -> None:
        self._repository = repository

    async def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: Context
    ) -> audit_pb2.ListAuditEventsResponse:
        page_size = request.page_size if request.HasField("page_size") else DEFAULT_PAGE_SIZE
        subject = str(UUID(request.subject)) if request.subject else ""  # validated already
        page = await self._repository.list_events(
            page_size=page_size,
            after=PAGE_TOKENS.decode(request.page_token),
            subject=subject,
            type_=request.type,
            time_left=context.time_remaining(),
        )
        return audit_pb2.ListAuditEventsResponse(
            events=[event_to_proto(record) for record in page.events],
            next_page_token=PAGE_TOKENS.encode(page.next_cursor) if page.next_cursor else "",
        )
