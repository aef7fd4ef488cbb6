"""One REST call → one trace: gateway HTTP span → gRPC client → gRPC server → cache and SQL."""

from __future__ import annotations

import asyncio

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from portico_users.server import RunningServer
from tests.integration.observability.conftest import JsonLog
from tests.support.gateway import gateway_client
from tests.support.tokens import Tokens

GET_USER = "/portico.users.v1.UserService/GetUser"
EDGE_SERVED = "portico.gateway.edge_served"


def _parent(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> ReadableSpan | None:
    return None if span.parent is None else by_id.get(span.parent.span_id)


async def _settled(spans: InMemorySpanExporter) -> list[ReadableSpan]:
    """The finished spans once the users service's server span is among them.

    The service ends its span just after it sent the answer, so the gateway (and the test) can
    have the answer first: on a busy machine the span arrives a moment later.
    """
    for _ in range(200):
        finished = list(spans.get_finished_spans())
        if any(s.kind == SpanKind.SERVER and GET_USER in s.name for s in finished):
            return finished
        await asyncio.sleep(0.025)
    return list(spans.get_finished_spans())


def _one(spans: list[ReadableSpan], kind: SpanKind, name_part: str) -> ReadableSpan:
    found = [s for s in spans if s.kind == kind and name_part in s.name]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


async def _create_user(api: httpx.AsyncClient, email: str) -> str:
    created = await api.post("/v1/users", json={"email": email, "display_name": "Trace"})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def test_one_rest_call_yields_one_trace_from_gateway_to_sql_and_cache(
    api: httpx.AsyncClient, spans: InMemorySpanExporter, json_log: JsonLog, tokens: Tokens
) -> None:
    user_id = await _create_user(api, "trace@example.com")
    token = await tokens.issue(user_id)  # the user reads themselves
    spans.clear()

    response = await api.get(
        f"/v1/users/{user_id}",
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "trace-test-1"},
    )

    assert response.status_code == 200
    everything = await _settled(spans)
    http = _one(everything, SpanKind.SERVER, "/v1/users/{id}")
    finished = [s for s in everything if s.context.trace_id == http.context.trace_id]
    # Everything else recorded meanwhile is test plumbing, never part of the request:
    assert all(s.parent is None for s in everything if s not in finished)
    by_id = {s.context.span_id: s for s in finished}
    client = _one(finished, SpanKind.CLIENT, GET_USER)
    server = _one(finished, SpanKind.SERVER, GET_USER)
    cache = _one(finished, SpanKind.CLIENT, "valkey HGET")
    sql = [s for s in finished if s.attributes and s.attributes.get("db.system") == "postgresql"]
    assert http.parent is None
    assert _parent(client, by_id) is http
    assert _parent(server, by_id) is client
    assert _parent(cache, by_id) is server
    assert cache.attributes is not None
    assert cache.attributes["portico.users.cache_hit"] is False  # first read: a miss
    assert sql, [s.name for s in finished]
    assert all(_parent(s, by_id) is server for s in sql)

    trace_id = format(http.context.trace_id, "032x")
    entries = json_log.entries()  # every line is one JSON object
    access = [
        e for e in entries if e["logger"] == "portico_gateway.access" and e["method"] == "GET"
    ]
    assert len(access) == 1
    assert access[0]["trace_id"] == trace_id
    assert access[0]["request_id"] == "trace-test-1"
    assert access[0]["route"] == "/v1/users/{id}"
    assert access[0]["status"] == 200
    assert access[0]["method"] == "GET"
    assert isinstance(access[0]["duration_ms"], float)
    assert token not in json_log.text  # nor any part of it
    assert token.split(".")[2] not in json_log.text


async def test_a_second_read_is_answered_at_the_edge_without_the_service(
    api: httpx.AsyncClient, spans: InMemorySpanExporter
) -> None:
    user_id = await _create_user(api, "edge@example.com")
    assert (await api.get(f"/v1/users/{user_id}")).status_code == 200  # fills the cache
    first = _one(await _settled(spans), SpanKind.SERVER, "GET /v1/users/{id}")
    assert first.attributes is not None
    assert first.attributes[EDGE_SERVED] is False  # a miss: the service answered
    spans.clear()

    assert (await api.get(f"/v1/users/{user_id}")).status_code == 200

    finished = list(spans.get_finished_spans())
    http = _one(finished, SpanKind.SERVER, "GET /v1/users/{id}")
    assert http.attributes is not None
    assert http.attributes[EDGE_SERVED] is True
    assert not [s for s in finished if s.kind == SpanKind.CLIENT and GET_USER in s.name]
    assert not [s for s in finished if s.attributes and s.attributes.get("db.system")]


async def test_a_read_through_the_service_is_a_cache_hit_without_sql(
    spans: InMemorySpanExporter, users_server: RunningServer, valkey_url: str, tokens: Tokens
) -> None:
    async with gateway_client(
        users_port=users_server.port,
        valkey_url=valkey_url,
        token=await tokens.admin(),
        edge_reads=False,  # every read reaches the users service and its cache
    ) as api:
        user_id = await _create_user(api, "hit@example.com")
        assert (await api.get(f"/v1/users/{user_id}")).status_code == 200
        await _settled(spans)
        spans.clear()

        assert (await api.get(f"/v1/users/{user_id}")).status_code == 200

    finished = await _settled(spans)
    cache = _one(finished, SpanKind.CLIENT, "valkey HGET")
    assert cache.attributes is not None
    assert cache.attributes["portico.users.cache_hit"] is True
    assert not [s for s in finished if s.attributes and s.attributes.get("db.system")]


async def test_the_gateway_joins_a_b3_trace_from_the_caller(
    api: httpx.AsyncClient, spans: InMemorySpanExporter
) -> None:
    trace_id = "463ac35c9f6413ad48485a3953bb6124"
    headers = {"X-B3-TraceId": trace_id, "X-B3-SpanId": "a2fb4a1d1a96d312", "X-B3-Sampled": "1"}

    response = await api.get("/v1/users/00000000-0000-4000-8000-000000000000", headers=headers)

    assert response.status_code == 404
    finished = await _settled(spans)
    assert {format(s.context.trace_id, "032x") for s in finished if s.parent} == {trace_id}
    server = _one(finished, SpanKind.SERVER, GET_USER)
    assert server.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == 5  # NOT_FOUND, recorded on the span


async def test_a_problem_names_the_trace_of_its_request(
    api: httpx.AsyncClient, spans: InMemorySpanExporter
) -> None:
    response = await api.get("/v1/users/00000000-0000-4000-8000-000000000000")

    assert response.status_code == 404  # NOT_FOUND from the users service
    assert response.headers["content-type"] == "application/problem+json"
    http = _one(list(spans.get_finished_spans()), SpanKind.SERVER, "/v1/users/{id}")
    assert response.json()["trace_id"] == format(http.context.trace_id, "032x")


async def test_a_gateway_problem_names_the_callers_trace(
    api: httpx.AsyncClient, spans: InMemorySpanExporter
) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    traceparent = f"00-{trace_id}-b7ad6b7169203331-01"

    response = await api.post(  # refused by the gateway itself, before any upstream call
        "/v1/users",
        content=b"{not json",
        headers={"traceparent": traceparent, "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    body = response.json()
    assert body["trace_id"] == trace_id
    assert body["request_id"] == response.headers["x-request-id"]
    server = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert {format(s.context.trace_id, "032x") for s in server} == {trace_id}
