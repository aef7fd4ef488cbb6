"""A bounded load of malformed requests leaves the gateway as it was (issue 14: done-when).

Against a real gateway process on loopback in front of real services: rounds of malformed
requests of every kind the edge refuses (garbage bytes, huge heads, too many headers, a bad
``Content-Length``, bodies cut short, unsendable header values, bad JSON, heads and bodies that
never finish), many at a time. A first round warms the process up (allocators, caches, lazy
imports); after a second, larger round the gateway must still answer normal requests, and its
asyncio tasks (``portico_gateway_asyncio_tasks``) and resident memory (``VmRSS``) must be back
within a stated bound of what they were after the first: a leak per request would show as
growth proportional to the second round.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
from collections.abc import Callable
from pathlib import Path

import httpx

from portico_audit.server import RunningServer as AuditServer
from portico_auth.server import RunningServer as AuthServer
from portico_users.server import RunningServer as UsersServer
from tests.integration.hostile.edge.conftest import EdgeGateway, StartGateway, exchange
from tests.support.security import People, authorization

WARM_UP, MEASURED = 400, 1600
AT_ONCE = 32
#: Clients of each slow kind (head, body) per round, all at once.
SLOW = 8
#: Tasks the process may have beyond its settled count: a scrape, a background refresh or two.
TASK_SLACK = 10
#: Memory the measured round may add: far below what keeping anything per request would take
#: (1,600 requests x 64 KiB heads = 100 MiB), above allocator noise on a busy machine.
RSS_SLACK_BYTES = 24 * 1024 * 1024
SETTLE_WITHIN_S = 60.0

HEAD = b"POST /v1/auth/token HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
FORM = b"Content-Type: application/x-www-form-urlencoded\r\n"
#: As the last chunk: close the connection without waiting for an answer.
HANG_UP = b""


def garbage(rng: random.Random) -> list[bytes]:
    return [rng.randbytes(rng.randint(16, 2048))]


def huge_head(rng: random.Random) -> list[bytes]:
    return [HEAD + b"X-Padding: " + b"a" * rng.randint(32_000, 65_536) + b"\r\n\r\n"]


def many_headers(rng: random.Random) -> list[bytes]:
    lines = b"".join(b"X-%d: 1\r\n" % n for n in range(rng.randint(120, 400)))
    return [HEAD + lines + b"\r\n"]


def bad_length(rng: random.Random) -> list[bytes]:
    return [HEAD + FORM + b"Content-Length: 1x\r\n\r\nusername=a"]


def cut_short(rng: random.Random) -> list[bytes]:
    """A body shorter than announced, then the client goes away (:data:`HANG_UP`)."""
    return [HEAD + FORM + b"Content-Length: 500\r\n\r\ngrant_type=password&user", HANG_UP]


def unsendable(rng: random.Random) -> list[bytes]:
    body = b"grant_type=password&username=a%40b.io&password=x"
    return [
        HEAD + FORM + b"X-Forwarded-For: caf\xe9\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    ]


def bad_json(rng: random.Random) -> list[bytes]:
    body = b'{"email": ' + b"[" * 3000
    return [
        b"POST /v1/auth/signup HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    ]


KINDS: list[Callable[[random.Random], list[bytes]]] = [
    garbage, huge_head, many_headers, bad_length, cut_short, unsendable, bad_json,
]  # fmt: skip


async def malformed_round(port: int, count: int, seed: int) -> None:
    """``count`` malformed requests, ``AT_ONCE`` at a time, plus a few clients too slow to
    finish a head or a body (answered 408 by the gateway's timeouts)."""
    rng = random.Random(seed)
    gate = asyncio.Semaphore(AT_ONCE)
    kinds = itertools.cycle(KINDS)

    async def one(chunks: list[bytes]) -> None:
        async with gate:
            if chunks[-1] == HANG_UP:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"".join(chunks))
                await writer.drain()
                writer.close()
                await writer.wait_closed()
            else:
                await exchange(port, *chunks)

    await asyncio.gather(
        *(one(next(kinds)(rng)) for _ in range(count)),
        *(exchange(port, HEAD, b"X-Slow: 1\r\n", pause_s=0.5) for _ in range(SLOW)),
        *(exchange(port, HEAD + FORM + b"Content-Length: 100\r\n\r\n", b"a") for _ in range(SLOW)),
    )


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) * 1024


async def live_tasks(http: httpx.AsyncClient) -> int:
    text = (await http.get("/metrics")).text
    match = re.search(r"^portico_gateway_asyncio_tasks (\S+)$", text, re.MULTILINE)
    assert match, text[:500]
    return int(float(match.group(1)))


async def settled_tasks(http: httpx.AsyncClient, at_most: int | None = None) -> int:
    """The task count once it stops falling (or is at most ``at_most``), within a bound."""
    previous = await live_tasks(http)
    async with asyncio.timeout(SETTLE_WITHIN_S):
        while True:
            await asyncio.sleep(0.5)
            now = await live_tasks(http)
            if (at_most is not None and now <= at_most) or (at_most is None and now >= previous):
                return now
            previous = now


async def serves_normal_requests(gateway: EdgeGateway, people: People) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
        me = await http.get("/v1/users/me", headers=authorization(people.self.access_token))
        assert me.status_code == 200, me.text
        login = {"grant_type": "password", "username": "self@example.com", "password": "wrong"}
        assert (await http.post("/v1/auth/token", data=login)).status_code == 401
        assert (await http.get("/readyz")).status_code == 200


async def test_malformed_load_leaves_no_tasks_or_memory_behind(
    start_gateway: StartGateway,
    users_server: UsersServer,
    auth_server: AuthServer,
    audit_server: AuditServer,
    valkey_url: str,
    people: People,
) -> None:
    upstreams = {
        "users_target": f"127.0.0.1:{users_server.port}",
        "auth_target": f"127.0.0.1:{auth_server.port}",
        "audit_target": f"127.0.0.1:{audit_server.port}",
        "valkey_url": valkey_url,
        "header_timeout_s": 2,
        "body_timeout_s": 2,
        "max_header_count": 100,
    }
    async with (
        start_gateway(**upstreams) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=20) as http,
    ):
        await serves_normal_requests(gateway, people)
        await malformed_round(gateway.port, WARM_UP, seed=1)
        await serves_normal_requests(gateway, people)
        tasks_before = await settled_tasks(http)
        rss_before = rss_bytes(gateway.process.pid)

        await malformed_round(gateway.port, MEASURED, seed=2)

        await serves_normal_requests(gateway, people)
        tasks_after = await settled_tasks(http, at_most=tasks_before + TASK_SLACK)
        rss_after = rss_bytes(gateway.process.pid)
    assert tasks_after <= tasks_before + TASK_SLACK, (tasks_before, tasks_after)
    growth = rss_after - rss_before
    assert growth <= RSS_SLACK_BYTES, f"RSS grew by {growth / 2**20:.1f} MiB"
    assert not any("Traceback" in line for line in gateway.output), "".join(gateway.output[-50:])
