"""What one client may make the gateway hold: header size and count, read time, connections
(issue 14, item 8).

Before: a 256 KiB header was parsed and served (httptools bounds nothing), a client could take
as long as it liked to send a request's head or body (slowloris), and connections were
unbounded. Now (``portico_gateway.edge``, ``EdgeLimitsMiddleware``): 431 for headers over
``GATEWAY_MAX_HEADER_BYTES`` or ``GATEWAY_MAX_HEADER_COUNT``, 408 when a head or a body does
not arrive in time, kept-alive connections closed when idle, and 503 on connections beyond
``GATEWAY_MAX_CONNECTIONS``: each a problem+json answer, never a hang. REST only: the gRPC
services sit behind the gateway (in a mesh, behind their sidecars) and take no HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from tests.integration.hostile.edge.conftest import (
    ANSWER_WITHIN_S,
    RawAnswer,
    StartGateway,
    exchange,
)
from tests.support.security import PROBLEM_FIELDS, PROBLEM_JSON

GET = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n"
#: Slow-client timeouts short enough for a test, long enough that a busy loop is not mistaken.
TIMEOUTS = {"header_timeout_s": 2, "body_timeout_s": 2}


def problem_of(answer: RawAnswer | None, status: int) -> dict[str, object]:
    assert answer is not None, "closed without an answer"
    assert answer.status == status, answer
    assert answer.headers["content-type"] == PROBLEM_JSON
    body: dict[str, object] = json.loads(answer.body)
    assert set(body) >= PROBLEM_FIELDS, body
    assert body["status"] == status
    assert body["request_id"] == answer.headers["x-request-id"]
    return body


async def test_a_256_kib_header_is_refused_with_431(start_gateway: StartGateway) -> None:
    async with start_gateway() as gateway:
        huge = GET + b"X-Padding: " + b"a" * 256 * 1024 + b"\r\n\r\n"
        body = problem_of(await exchange(gateway.port, huge), 431)
        assert "16384 bytes" in str(body["detail"])
        # the gateway is fine afterwards
        async with httpx.AsyncClient(base_url=gateway.url, timeout=ANSWER_WITHIN_S) as http:
            assert (await http.get("/healthz")).status_code == 200


async def test_headers_over_the_byte_bound_are_431_and_under_it_are_served(
    start_gateway: StartGateway,
) -> None:
    async with (
        start_gateway(max_header_bytes=4096) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=ANSWER_WITHIN_S) as http,
    ):
        served = await http.get("/healthz", headers={"x-padding": "a" * 3000})
        assert served.status_code == 200, served.text
        refused = await http.get("/healthz", headers={"x-padding": "a" * 4100})
        assert refused.status_code == 431, refused.text
        assert refused.headers["content-type"] == PROBLEM_JSON
        assert "4096 bytes" in refused.json()["detail"]
        assert refused.json()["request_id"] == refused.headers["x-request-id"]


async def test_too_many_headers_are_431(start_gateway: StartGateway) -> None:
    async with (
        start_gateway(max_header_count=20) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=ANSWER_WITHIN_S) as http,
    ):
        # httpx adds host, accept, accept-encoding, connection, user-agent: 5 of its own
        assert (await http.get("/healthz", headers={f"x-{n}": "1" for n in range(15)})).is_success
        refused = await http.get("/healthz", headers={f"x-{n}": "1" for n in range(16)})
        assert refused.status_code == 431, refused.text
        assert "more than 20 headers" in refused.json()["detail"]


async def test_a_head_that_never_completes_is_408(start_gateway: StartGateway) -> None:
    """Slowloris: a header line every half second, never the blank line that ends the head."""
    async with start_gateway(**TIMEOUTS) as gateway:
        began = time.monotonic()
        trickle = [GET, *(b"X-Slow-%d: 1\r\n" % n for n in range(200))]
        answer = await exchange(gateway.port, *trickle, pause_s=0.5)
        problem_of(answer, 408)
        assert time.monotonic() - began < ANSWER_WITHIN_S  # not the 100 s the trickle would take


async def test_a_connection_that_sends_nothing_is_closed(start_gateway: StartGateway) -> None:
    async with start_gateway(**TIMEOUTS) as gateway:
        problem_of(await exchange(gateway.port), 408)


async def test_a_body_that_never_arrives_is_408(start_gateway: StartGateway) -> None:
    async with start_gateway(**TIMEOUTS) as gateway:
        head = (
            b"POST /v1/auth/token HTTP/1.1\r\nHost: gateway\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
        )
        answer = await exchange(gateway.port, head, *[b"a"] * 200, pause_s=0.5)
        problem_of(answer, 408)
        await asyncio.sleep(0)  # the app saw a disconnect: logged as such, not as a crash
        assert not any("Traceback" in line for line in gateway.output), gateway.output


async def test_an_idle_kept_alive_connection_is_closed(start_gateway: StartGateway) -> None:
    async with start_gateway(keep_alive_timeout_s=1) as gateway:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            writer.write(GET + b"\r\n")
            async with asyncio.timeout(ANSWER_WITHIN_S):
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
                await reader.readexactly(len(b'{"status":"ok"}'))
                assert await reader.read() == b""  # closed by the gateway, well within the bound
        finally:
            writer.close()


async def test_connections_beyond_the_limit_get_503_and_the_others_are_served(
    start_gateway: StartGateway,
) -> None:
    limit = 5
    async with start_gateway(max_connections=limit, keep_alive_timeout_s=60) as gateway:
        held = [await asyncio.open_connection("127.0.0.1", gateway.port) for _ in range(limit)]
        try:
            for reader, writer in held:  # each is served once, and kept alive
                writer.write(GET + b"\r\n")
                async with asyncio.timeout(ANSWER_WITHIN_S):
                    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
                    await reader.readexactly(len(b'{"status":"ok"}'))
            beyond = await exchange(gateway.port, GET + b"\r\n")
            problem_of(beyond, 503)
            assert beyond is not None
            assert beyond.headers["retry-after"] == "1"
            assert beyond.headers["connection"] == "close"
            reader, writer = held[0]  # an established connection is still served
            writer.write(GET + b"\r\n")
            async with asyncio.timeout(ANSWER_WITHIN_S):
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
                await reader.readexactly(len(b'{"status":"ok"}'))
        finally:
            for _, writer in held:
                writer.close()
        # once they are gone, new connections are served again
        async with httpx.AsyncClient(base_url=gateway.url, timeout=ANSWER_WITHIN_S) as http:
            for _ in range(100):
                if (await http.get("/healthz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("still refused after the held connections closed")
