"""Header values gRPC metadata cannot carry: a 400 naming the header at once, never a hang.

HTTP/1.1 lets a header value hold a TAB and bytes 0x80-0xFF; gRPC's C core refuses them as
metadata, and grpc.aio then never finished the call: the gateway did not answer at all (issue
14, item 1). Every header the gateway forwards upstream (``FORWARDED_HEADERS``) is tried with
each kind of byte, on a public route (where even ``Authorization`` is not checked first) and on a
protected one; the trace-context headers, which OpenTelemetry re-encodes before forwarding,
must not hang either.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from portico_gateway.transcoding.routes import FORWARDED_HEADERS
from tests.support.security import People, authorization, problem

#: Bytes HTTP/1.1 lets through in a header value that gRPC metadata cannot carry.
UNSENDABLE = {"tab": b"a\tb", "obs-text": b"caf\xe9", "utf-8": "é".encode(), "del": b"a\x7fb"}
#: A bound on "at once" that still allows a slow machine: the bug was no answer at all.
ANSWER_WITHIN_S = 15
LOGIN = {"grant_type": "password", "username": "nobody@example.com", "password": "wrong guess"}


def hostile(name: str, value: bytes) -> dict[bytes, bytes]:
    return {name.encode(): b"Bearer " + value if name == "authorization" else value}


@pytest.mark.parametrize("kind", sorted(UNSENDABLE))
@pytest.mark.parametrize("name", FORWARDED_HEADERS)
async def test_forwarded_header_on_a_public_route_is_a_400(
    api: httpx.AsyncClient, name: str, kind: str
) -> None:
    async with asyncio.timeout(ANSWER_WITHIN_S):
        response = await api.post(
            "/v1/auth/token", data=LOGIN, headers=hostile(name, UNSENDABLE[kind])
        )
    body = problem(response, 400)
    assert name in body["detail"], body
    assert body["type"].endswith("/invalid-header")


@pytest.mark.parametrize("name", [n for n in FORWARDED_HEADERS if n != "authorization"])
async def test_forwarded_header_on_a_protected_route_is_a_400(
    api: httpx.AsyncClient, people: People, name: str
) -> None:
    token = people.self.access_token.encode()
    headers = {b"authorization": b"Bearer " + token, name.encode(): UNSENDABLE["tab"]}
    async with asyncio.timeout(ANSWER_WITHIN_S):
        response = await api.get("/v1/users/me", headers=headers)
    assert name in problem(response, 400)["detail"]
    # and the same caller with clean headers is served
    ok = await api.get("/v1/users/me", headers=authorization(people.self.access_token))
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("name", ["traceparent", "tracestate", "baggage", "x-request-id"])
async def test_trace_and_request_id_headers_do_not_hang(api: httpx.AsyncClient, name: str) -> None:
    """Not forwarded as sent (re-encoded or replaced when malformed): an ordinary answer."""
    for value in UNSENDABLE.values():
        async with asyncio.timeout(ANSWER_WITHIN_S):
            response = await api.post("/v1/auth/token", data=LOGIN, headers={name.encode(): value})
        assert response.status_code == 401, response.text  # the wrong password, nothing else
