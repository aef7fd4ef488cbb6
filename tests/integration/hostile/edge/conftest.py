"""The gateway as a real process (``python -m portico_gateway``): what the edge bounds is the
connection itself, which only uvicorn's own sockets show. Clients here are raw sockets where a
well-behaved HTTP client could not send the hostile input (slow heads, huge headers).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import pytest

from tests.support.processes import free_port, kill, read_until, spawn

#: Bounds a slow, shared machine still meets: the gateway starts, an answer arrives.
START_WITHIN_S = 30.0
ANSWER_WITHIN_S = 20.0


@dataclass(frozen=True)
class EdgeGateway:
    process: asyncio.subprocess.Process
    port: int
    #: Its output since start-up (read all along, so a full pipe never blocks it).
    output: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


StartGateway = Callable[..., AbstractAsyncContextManager[EdgeGateway]]


@pytest.fixture
def start_gateway() -> StartGateway:
    """Start a gateway process with ``GATEWAY_<NAME>`` settings; it is killed afterwards.

    Its upstreams are closed ports unless given (``users_target=…``): the edge answers before
    any of them is called, and ``/healthz`` needs none. Rate limits are off (every client here
    is 127.0.0.1).
    """

    @asynccontextmanager
    async def started(**settings: object) -> AsyncIterator[EdgeGateway]:
        port = free_port()
        env = {
            "GATEWAY_PORT": str(port),
            "GATEWAY_USERS_TARGET": f"127.0.0.1:{free_port()}",
            "GATEWAY_AUTH_TARGET": f"127.0.0.1:{free_port()}",
            "GATEWAY_AUDIT_TARGET": f"127.0.0.1:{free_port()}",
            "GATEWAY_VALKEY_URL": f"redis://127.0.0.1:{free_port()}/0",
            "GATEWAY_RATE_LIMIT_ADDRESS_PER_MINUTE": "0",
            "GATEWAY_RATE_LIMIT_USER_PER_MINUTE": "0",
            "GATEWAY_LOG_FORMAT": "text",
            "OTEL_SDK_DISABLED": "true",
            **{f"GATEWAY_{name.upper()}": str(value) for name, value in settings.items()},
        }
        process = await spawn("portico_gateway", env)
        output: list[str] = []

        async def drain() -> None:
            assert process.stdout is not None
            while line := await process.stdout.readline():
                output.append(line.decode(errors="replace"))

        try:
            await read_until(process, "Uvicorn running on", within_s=START_WITHIN_S)
            reader = asyncio.create_task(drain())
            try:
                yield EdgeGateway(process, port, output)
            finally:
                kill(process)
                await process.wait()
                await reader
        finally:
            kill(process)

    return started


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


async def exchange(
    port: int, *chunks: bytes, pause_s: float = 0.0, within_s: float = ANSWER_WITHIN_S
) -> RawAnswer | None:
    """Send ``chunks`` on a fresh connection (``pause_s`` apart), then read until it closes.

    The answer, or None when the gateway closed the connection without one. A write that fails
    because the gateway already answered and closed is not an error: the answer is read anyway.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received: list[bytes] = []

    async def read_all() -> None:  # chunk by chunk: what arrived stays if the connection resets
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                received.append(chunk)

    reading = asyncio.create_task(read_all())
    try:
        async with asyncio.timeout(within_s):
            for n, chunk in enumerate(chunks):
                if n and pause_s:
                    await asyncio.sleep(pause_s)
                if reading.done():
                    break  # answered and closed: the rest is not sent
                try:
                    writer.write(chunk)
                    await writer.drain()
                except ConnectionError:
                    break
            await reading
    finally:
        reading.cancel()
        writer.close()
    return parse(b"".join(received))


def parse(raw: bytes) -> RawAnswer | None:
    """The first HTTP/1.1 answer in ``raw`` (a body of ``content-length`` bytes), or None."""
    if not raw:
        return None
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"HTTP/1\.1 (\d{3}) ", status_line)
    assert match, raw[:200]
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(rest)))
    return RawAnswer(int(match.group(1)), headers, rest[:length])
