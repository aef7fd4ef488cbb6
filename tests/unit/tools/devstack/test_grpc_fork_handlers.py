"""The launcher switches gRPC's fork handlers off: it forks (a ``preexec_fn``) while using gRPC.

With the handlers on, every such fork stops gRPC's threads first; one of those forks hung the
launcher for good (``portico_devstack``'s docstring). The script below does what the launcher does:
gRPC calls in flight while children are started with a ``preexec_fn``. gRPC logs from its fork
handler on every fork it handles, so its log shows whether the handlers ran.
"""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import asyncio
import portico_devstack  # first, as in portico-dev: it sets the default
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

async def main():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stop = False

    async def chatter():
        while not stop:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)

    calls = [asyncio.create_task(chatter()) for _ in range(4)]
    for _ in range(40):
        child = await asyncio.create_subprocess_exec("true", preexec_fn=lambda: None)
        await child.wait()
    stop = True
    await asyncio.gather(*calls)
    await server.stop(None)
    print("forked 40 times")

asyncio.run(main())
"""


def _run(*, handlers_on: bool = False) -> str:
    """The script's gRPC log. With the handlers off it must run to the end; with them on (the
    control) it may also crash or hang in a fork, the very failure the launcher avoids, and its
    log up to then is what counts."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
    env = clean | {"GRPC_VERBOSITY": "INFO"}
    if handlers_on:
        env["GRPC_ENABLE_FORK_SUPPORT"] = "true"
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=not handlers_on,
        )
    except subprocess.TimeoutExpired as exc:
        if not handlers_on:
            raise
        output = exc.stderr
        return output.decode(errors="replace") if isinstance(output, bytes) else output or ""
    if not handlers_on:
        assert "forked 40 times" in done.stdout, done.stdout + done.stderr
    return done.stderr


def test_importing_the_launcher_switches_grpc_fork_handlers_off() -> None:
    log = _run()
    assert "fork_posix" not in log, log


def test_an_explicit_setting_wins_and_shows_what_the_handlers_do() -> None:
    # The control: the same script with the handlers on logs from them on its forks.
    log = _run(handlers_on=True)
    assert "fork_posix" in log, log
