"""A stopping gateway answers the request of a connection it accepted just before the stop.

uvicorn's graceful shutdown closes every connection that is not in the middle of a request, a
connection accepted a moment ago whose request is still on its way included: that client saw
its connection accepted and lost its request (the gateway drill counted up to 7 in one rolling
restart on a busy machine). :mod:`portico_gateway.edge` gives such a connection a short grace
to send its request, answers it, then closes.
"""

from __future__ import annotations

import asyncio
import itertools
import signal

from tests.integration.hostile.edge.conftest import (
    ANSWER_WITHIN_S,
    StartGateway,
    exchange,
    parse,
)

HEALTHZ = b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n"


async def logged(output: list[str], text: str) -> None:
    """Return once a line of ``output`` (filled by the fixture's reader) contains ``text``."""
    async with asyncio.timeout(ANSWER_WITHIN_S):
        for _ in itertools.count():  # the reader appends; nothing to wait on but the list
            if any(text in line for line in output):
                return
            await asyncio.sleep(0.02)


async def test_a_connection_opened_before_the_stop_gets_its_answer(
    start_gateway: StartGateway,
) -> None:
    async with start_gateway(shutdown_delay_s=0, shutdown_grace_s=20) as gateway:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            # Connections are accepted in order: once a later one is answered, this one is open.
            later = await exchange(gateway.port, HEALTHZ + b"connection: close\r\n\r\n")
            assert later is not None
            assert later.status == 200, later
            assert gateway.process.returncode is None
            gateway.process.send_signal(signal.SIGTERM)
            await logged(gateway.output, "Shutting down")
            await asyncio.sleep(0.2)  # uvicorn has told every connection to stop by now
            writer.write(HEALTHZ + b"\r\n")  # keep-alive asked: the stop closes it after
            await writer.drain()
            async with asyncio.timeout(ANSWER_WITHIN_S):
                raw = await reader.read()  # until the gateway closes the connection
        finally:
            writer.close()
        answer = parse(raw)
        assert answer is not None, "".join(gateway.output[-20:])
        assert answer.status == 200, answer
        assert answer.headers.get("connection") == "close", answer.headers
        assert await asyncio.wait_for(gateway.process.wait(), ANSWER_WITHIN_S) == 0
