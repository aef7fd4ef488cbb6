"""ListAuditEvents over gRPC and REST (through the gateway): admins only, pages and filters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import valkey.asyncio as valkey_asyncio

from portico.audit.v1 import audit_pb2, audit_pb2_grpc
from portico_audit.server import RunningServer as AuditServer
from portico_users.server import RunningServer as UsersServer
from tests.support.audit import STREAM, entry
from tests.support.gateway import gateway_client
from tests.support.tokens import Tokens, bearer

pytestmark = pytest.mark.integration

SUBJECT = "6f1c2a9e-0d7b-4c51-9e0a-3b8f5d2c7a11"


@pytest.fixture
async def recorded(audit_server: AuditServer, valkey_url: str) -> list[dict[str, str]]:
    """Seven events in the stream (three about SUBJECT, two of type user.deleted), all stored."""
    events = [
        entry(subject=SUBJECT, type_="user.created"),
        entry(type_="user.created"),
        entry(subject=SUBJECT, type_="user.updated"),
        entry(type_="user.deleted"),
        entry(subject=SUBJECT, type_="user.deleted"),
        entry(type_="auth.logged_in"),
        entry(type_="auth.logged_in"),
    ]
    client: Any = valkey_asyncio.from_url(valkey_url)  # type: ignore[no-untyped-call]
    try:
        for event in events:
            await client.xadd(STREAM, event)
        for _ in range(200):
            if int((await client.xinfo_groups(STREAM))[0]["pending"]) == 0 and int(
                (await client.xinfo_groups(STREAM))[0].get("entries-read") or 0
            ) >= len(events):
                break
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()
    return events


@pytest.fixture
async def channel(audit_server: AuditServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{audit_server.port}") as channel:
        yield channel


async def test_admins_page_through_every_event_newest_first(
    recorded: list[dict[str, str]], channel: grpc.aio.Channel, tokens: Tokens
) -> None:
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    admin = bearer(await tokens.admin())
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = await stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(page_size=3, page_token=token),
            metadata=admin,
            timeout=5,
        )
        assert len(page.events) <= 3
        seen += [e.id for e in page.events]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(e["id"] for e in recorded)
    assert len(seen) == len(set(seen))
    first = (
        await stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(page_size=1), metadata=admin, timeout=5
        )
    ).events[0]
    assert first.service == "users"
    assert first.payload["email"] == "a@example.com"
    assert first.recorded_at.seconds > 0


async def test_filters_by_subject_and_type(
    recorded: list[dict[str, str]], channel: grpc.aio.Channel, tokens: Tokens
) -> None:
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    admin = bearer(await tokens.admin())
    about = await stub.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(subject=SUBJECT.upper()), metadata=admin, timeout=5
    )
    assert sorted(e.type for e in about.events) == ["user.created", "user.deleted", "user.updated"]
    both = await stub.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(subject=SUBJECT, type="user.deleted"),
        metadata=admin,
        timeout=5,
    )
    assert [e.type for e in both.events] == ["user.deleted"]
    logins = await stub.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(type="auth.logged_in", page_size=1),
        metadata=admin,
        timeout=5,
    )
    assert len(logins.events) == 1
    assert logins.next_page_token


async def test_plain_users_are_refused_and_bad_requests_are_invalid(
    audit_server: AuditServer, channel: grpc.aio.Channel, tokens: Tokens
) -> None:
    stub = audit_pb2_grpc.AuditServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(), metadata=bearer(await tokens.issue()), timeout=5
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    admin = bearer(await tokens.admin())
    for request in (
        audit_pb2.ListAuditEventsRequest(subject="not-a-uuid"),
        audit_pb2.ListAuditEventsRequest(page_size=0),
        audit_pb2.ListAuditEventsRequest(page_token="forged"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.ListAuditEvents(request, metadata=admin, timeout=5)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_rest_get_v1_audit_events_through_the_gateway(
    recorded: list[dict[str, str]],
    users_server: UsersServer,
    audit_server: AuditServer,
    valkey_url: str,
    tokens: Tokens,
) -> None:
    async with gateway_client(
        users_port=users_server.port,
        audit_port=audit_server.port,
        valkey_url=valkey_url,
        token=await tokens.admin(),
    ) as api:
        response = await api.get(
            "/v1/audit/events", params={"subject": SUBJECT, "type": "user.created"}
        )
        assert response.status_code == 200, response.text
        (event,) = response.json()["events"]
        assert event["subject"] == SUBJECT
        assert event["payload"] == {"email": "a@example.com"}
        bad = await api.get("/v1/audit/events", params={"page_size": 500})
        assert bad.status_code == 400
        assert bad.headers["content-type"].startswith("application/problem+json")
        plain = await api.get(
            "/v1/audit/events", headers={"Authorization": f"Bearer {await tokens.issue()}"}
        )
        assert plain.status_code == 403
