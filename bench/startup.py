"""Start-up times: each process from exec to ready, and ``make run`` to the first served request."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc
import httpx
import psutil
from grpc_health.v1 import health_pb2

from bench import tokens

Probe = Callable[[], Awaitable[bool]]
_POLL_S = 0.005


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def grpc_serving(port: int) -> Probe:
    """Ready when the port accepts and grpc.health.v1 says SERVING (a new channel per try)."""

    async def probe() -> bool:
        if not _accepts(port):
            return False
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            try:
                reply = await check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    return probe


def http_ok(url: str, *, headers: dict[str, str] | None = None) -> Probe:
    """Ready when ``url`` answers 200 (to a request with ``headers``)."""

    async def probe() -> bool:
        async with httpx.AsyncClient(timeout=1, headers=headers) as client:
            try:
                return (await client.get(url)).status_code == 200
            except httpx.HTTPError:
                return False

    return probe


def http_answers(url: str) -> Probe:
    """Ready when ``url`` gives any HTTP answer (401 for a route that needs a token)."""

    async def probe() -> bool:
        async with httpx.AsyncClient(timeout=1) as client:
            try:
                await client.get(url)
            except httpx.HTTPError:
                return False
            return True

    return probe


async def wait_ready(proc: asyncio.subprocess.Process, probe: Probe, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await probe():
        if proc.returncode is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {proc.pid} not ready after {timeout_s:g} s")
        await asyncio.sleep(_POLL_S)


async def spawn(
    argv: Sequence[str], *, env: dict[str, str], log: IO[Any], cwd: Path | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )


async def terminate(proc: asyncio.subprocess.Process, *, timeout_s: float = 20.0) -> None:
    """SIGTERM the process we started (by its pid), SIGKILL after ``timeout_s``."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        # spawn() made it a process-group leader: SIGKILL the group it leads, so that a child
        # which ignored the SIGTERM (make's portico-dev, say) does not outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


@dataclass(frozen=True, slots=True)
class StartupSample:
    """One copy's start: seconds from exec to ready, RSS (MiB) at ready and after idling."""

    ready_s: float
    rss_at_ready_mb: float
    rss_idle_mb: float
    #: Of the idle RSS, anonymous memory (heaps, the Python objects); the rest is file-backed
    #: (the interpreter's and the extension modules' code, shared between processes).
    anon_idle_mb: float


async def exec_to_ready(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    probe: Probe,
    log: IO[Any],
    cwd: Path | None = None,
    timeout_s: float = 30.0,
    idle_s: float = 2.0,
) -> StartupSample:
    """Start a copy, time exec → ready, note its RSS when ready and ``idle_s`` later, stop it.

    The idle figure is what a replica holds while it waits for traffic: start-up garbage
    collected, ``gc.freeze()`` done, the background tasks (health probe, session listener,
    outbox relay or consumer) running. Nothing is sent to the copy in between.
    """
    started = time.perf_counter()
    proc = await spawn(argv, env=env, log=log, cwd=cwd)
    try:
        await wait_ready(proc, probe, timeout_s)
        elapsed = time.perf_counter() - started
        watched = psutil.Process(proc.pid)
        at_ready = watched.memory_info().rss / 2**20
        await asyncio.sleep(idle_s)  # a fixed wait by design: what is measured is "idle for 2 s"
        idle = watched.memory_info().rss / 2**20
        anon = _anonymous_mb(proc.pid)
    finally:
        await terminate(proc)
    return StartupSample(elapsed, at_ready, idle, anon)


def _anonymous_mb(pid: int) -> float:
    """``Anonymous`` of ``/proc/<pid>/smaps_rollup``, MiB (0 where the kernel has no rollup)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Anonymous:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def make_run_to_first_request(
    repo: Path, *, data_dir: Path, log: IO[Any], timeout_s: float = 120.0
) -> tuple[float, float]:
    """``make run`` (own ports, ``data_dir``) to its first served ``GET /v1/users``; then stop it.

    Two times from exec: the first answer of any kind (401 without a token: the stack is up), and
    the first 200, which needs the dev admin to log in first (signed up on a new data folder;
    the login, an Argon2 check, is part of that time).
    """
    ports = {name: free_port() for name in ("GATEWAY", "USERS", "AUTH")}
    env = dict(os.environ) | {f"PORTICO_DEV_{n}_PORT": str(p) for n, p in ports.items()}
    env |= {"PORTICO_DEV_DATA_DIR": str(data_dir), "PORTICO_DEV_VALKEY_PORT": "0"}
    for name in ("DATABASE_URL", "VALKEY_URL", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(name, None)
    base = f"http://127.0.0.1:{ports['GATEWAY']}"
    started = time.perf_counter()
    make = await spawn(["make", "--no-print-directory", "run"], env=env, log=log, cwd=repo)
    try:
        await wait_ready(make, http_answers(f"{base}/v1/users?page_size=1"), timeout_s)
        answered = time.perf_counter() - started
        admin = tokens.Login(tokens.ADMIN_EMAIL, tokens.ADMIN_PASSWORD)
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            try:
                await tokens.log_in(client, admin)
            except tokens.TokenError:  # a new data folder: no admin yet
                await tokens.sign_up(client, admin.email, "Admin", admin.password)
                await tokens.log_in(client, admin)
            reply = await client.get(
                "/v1/users",
                params={"page_size": 1},
                headers={"Authorization": f"Bearer {admin.token}"},
            )
        if reply.status_code != 200:
            raise RuntimeError(f"`make run`: GET /v1/users answered {reply.status_code}")
        return answered, time.perf_counter() - started
    finally:
        # Stop the launcher as Ctrl-C would: SIGTERM to make's children (portico-dev), by pid.
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(make.pid).children():
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(make.wait(), 40.0)
        except TimeoutError:
            await terminate(make)
        for _ in range(200):  # up to 20 s for the ports to close
            if not any(_accepts(p) for p in ports.values()):
                break
            await asyncio.sleep(0.1)
