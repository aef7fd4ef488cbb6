"""The local stack behind ``make run``: backends, migrations, then supervised service processes.

Order of start: PostgreSQL (embedded unless ``DATABASE_URL``) → Valkey (embedded unless
``VALKEY_URL``: a state instance that never evicts and the users cache's own, each with its ACL
users; docs/data-stores.md) → migrations → users service → auth service → audit service (each
until its gRPC health check says SERVING; auth signs tokens with a dev key kept in
``<data_dir>/auth/signing-key.pem``, made on the first run) → gateway (until ``/readyz`` answers
200; it proves itself to auth with a forwarder key made for each run, SECURITY.md) → with
``observe`` (``make run OBSERVE=1``), a local Prometheus scraping all four
(:mod:`portico_devstack.prometheus`; when no ``prometheus`` is installed, or it fails to start,
the launcher says so and runs on without it). Each child's output is shown line by line behind
its name.

With ``images`` (``portico-dev --images localhost/portico/{name}:local``) the migrations, the
services and the gateway run from their container images instead (:class:`Containers`): the
same settings, host network, read-only root, no capabilities. ``make images`` starts the stack
this way to prove each image serves, not merely starts.

Order of stop (Ctrl-C / SIGTERM): Prometheus, gateway, then audit, auth, users (SIGTERM by pid, so
each drains its work; SIGKILL only after ``stop_timeout_s``), then Valkey and PostgreSQL. The data
folder is kept. A second Ctrl-C kills the children at once. A service that exits on its own is
reported, the rest is stopped, and the launcher exits non-zero (Prometheus is not a service: if it
dies, its own lines say why and the stack runs on).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import grpc
import httpx
from grpc_health.v1 import health_pb2

from portico_devstack import prometheus, roles, valkey_acl
from portico_devstack.backends import CACHE_MEMORY, STATE_MEMORY, EmbeddedPostgres, EmbeddedValkey
from portico_devstack.config import DevSettings, child_environment
from portico_migrations.config import default_migrations_dir
from portico_migrations.runner import migrate

_PR_SET_PDEATHSIG = 1
_COLORS = ("\033[36m", "\033[35m", "\033[33m", "\033[32m")


class StartupError(Exception):
    """The stack could not start; the message says which part and why."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # If the launcher is killed outright, its children get SIGTERM instead of living on. (A
    # preexec_fn means fork(), not vfork(): see the package docstring on gRPC's fork handlers.)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


# Settings a containerised child receives (by name: podman copies the value from its own
# environment, so no secret appears on a command line): the components' own prefixes, and the
# ones every process reads.
_PASSED_PREFIXES = ("USERS_", "AUTH_", "AUDIT_", "GATEWAY_", "MIGRATE_", "OTEL_")
_PASSED_NAMES = ("PYTHONUNBUFFERED",)
# Where a containerised auth service finds the dev signing key (mounted read-only).
_KEY_IN_CONTAINER = "/run/portico/signing-key.pem"
# Where a container finds the embedded PostgreSQL's socket (it listens on a Unix socket only, in
# a data folder the image's user may not enter: the socket itself is mounted).
_PG_SOCKET_DIR_IN_CONTAINER = "/run/postgresql"
_DSN_SETTINGS = ("_POSTGRES__DSN", "MIGRATE_DATABASE_URL")


def _socket_dsn(dsn: str, folder: str) -> str:
    """``dsn`` with its Unix socket folder (the ``host`` query parameter) replaced by ``folder``."""
    parts = urlsplit(dsn)
    query = [(k, folder if k == "host" else v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="/", quote_via=quote)))


@dataclass(frozen=True)
class Containers:
    """Runs children from container images with podman instead of from this virtualenv.

    Each container runs as its image's (non-root) user, on the host's network (the backends and
    the other services are on loopback), with a read-only root filesystem, no capabilities and
    no new privileges: as ``make images`` checks them and as Kubernetes runs them. ``podman
    run`` stays in the foreground, so the launcher supervises it like any child: its output is
    the container's, SIGTERM reaches the service (podman proxies signals) and its exit code is
    the service's. A container left behind by a SIGKILLed podman is removed by name.
    """

    reference: str
    podman: str = "podman"

    def image(self, name: str) -> str:
        return self.reference.replace("{name}", name)

    def container(self, name: str) -> str:
        return f"portico-dev-{name}-{os.getpid()}"

    def argv(
        self,
        name: str,
        env: Mapping[str, str],
        *,
        mounts: Mapping[Path, str] | None = None,
        args: Sequence[str] = (),
    ) -> list[str]:
        passed = sorted(k for k in env if k.startswith(_PASSED_PREFIXES) or k in _PASSED_NAMES)
        volumes = [f"--volume={src}:{dst}:ro" for src, dst in (mounts or {}).items()]
        return [
            self.podman,
            "run",
            "--rm",
            f"--name={self.container(name)}",
            "--network=host",
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "--health-interval=disable",  # the launcher probes readiness itself; no timer
            *volumes,
            *(f"--env={k}" for k in passed),
            self.image(name),
            *args,
        ]

    async def remove(self, name: str) -> None:
        remove = await asyncio.create_subprocess_exec(
            self.podman,
            "rm",
            "--force",
            "--ignore",
            self.container(name),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await remove.wait()


def say(message: str) -> None:
    print(f"portico | {message}", flush=True)  # noqa: T201 (the launcher's console output)


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    env: dict[str, str]
    color: str = ""
    #: A service: its exit stops the stack (Prometheus is an extra, not essential).
    essential: bool = True
    #: Set when ``argv`` runs a container: a forced stop also removes it.
    containers: Containers | None = None
    process: asyncio.subprocess.Process | None = None
    _pump: asyncio.Task[None] | None = field(default=None, repr=False)

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops children in order
            preexec_fn=_die_with_parent,
        )
        self._pump = asyncio.create_task(self._relay())

    async def _relay(self) -> None:
        if self.process is None or self.process.stdout is None:
            return
        reset = "\033[0m" if self.color else ""
        prefix = f"{self.color}{self.name:<7} |{reset} "
        async for raw in self.process.stdout:
            sys.stdout.write(prefix + raw.decode("utf-8", "replace").rstrip("\n") + "\n")
            sys.stdout.flush()

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    async def wait(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} was never started")
        code = await self.process.wait()
        if self._pump is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._pump, 2)
        return code

    async def stop(self, *, timeout_s: float, force: asyncio.Event) -> int | None:
        """SIGTERM, wait up to ``timeout_s`` (or until ``force``), then SIGKILL."""
        if self.process is None or self.process.returncode is not None:
            return self.returncode
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        waiter = asyncio.create_task(self.wait())
        forced = asyncio.create_task(force.wait())
        await asyncio.wait({waiter, forced}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        forced.cancel()
        if not waiter.done():
            say(f"{self.name} did not stop in time; killing it")
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            if self.containers is not None:
                await self.containers.remove(self.name)
        return await waiter


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


async def _grpc_serving(target: str) -> bool:
    async with grpc.aio.insecure_channel(target) as channel:
        # A typed multicallable: the published HealthStub stubs do not declare Check.
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


async def _http_ready(url: str) -> bool:
    async with httpx.AsyncClient(timeout=1) as client:
        try:
            return (await client.get(url)).status_code == 200
        except httpx.HTTPError:
            return False


async def _wait_ready(child: Child, probe: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await probe():
        if child.returncode is not None:
            raise StartupError(f"{child.name} exited with code {child.returncode} while starting")
        if time.monotonic() > deadline:
            raise StartupError(f"{child.name} was not ready after {timeout_s:g} s")
        await asyncio.sleep(0.05)


class Stack:
    """Everything ``make run`` starts; usable from tests and benchmarks too."""

    def __init__(self, settings: DevSettings) -> None:
        self.settings = settings
        self.postgres: EmbeddedPostgres | None = None
        self.valkey: EmbeddedValkey | None = None
        #: The users cache's own Valkey (embedded only; evicting, unlike ``valkey``).
        self.valkey_cache: EmbeddedValkey | None = None
        self.children: list[Child] = []
        #: Set with ``images``: components run from their container images.
        self.containers = Containers(settings.images, settings.podman) if settings.images else None
        self.force = asyncio.Event()
        #: The local Prometheus's URL once it runs (``observe``), else None.
        self.prometheus_url: str | None = None
        #: Why ``observe`` found no Prometheus to run ("" when it runs or was not asked for).
        self.prometheus_note = ""

    @property
    def gateway_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.gateway_port}"

    @property
    def users_target(self) -> str:
        return f"{self.settings.host}:{self.settings.users_port}"

    @property
    def auth_target(self) -> str:
        return f"{self.settings.host}:{self.settings.auth_port}"

    @property
    def audit_target(self) -> str:
        return f"{self.settings.host}:{self.settings.audit_port}"

    async def _dev_signing_key(self) -> Path:
        """The dev signing key, made once (``portico-auth keygen``) and kept with the data."""
        path = (self.settings.data_dir / "auth" / "signing-key.pem").resolve()
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            keygen = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "portico_auth",
                "keygen",
                str(path),
                stdout=asyncio.subprocess.DEVNULL,
            )
            if await keygen.wait() != 0:
                raise StartupError(f"could not write a dev signing key to {path}")
            say(f"auth: new dev signing key in {path}")
        return path

    async def _signing_key_for_auth(self) -> tuple[str, dict[Path, str]]:
        """``AUTH_SIGNING_KEY_FILES`` and what to mount for it.

        A container runs as its image's user, which cannot read a key private to the user running
        the launcher: it gets a readable copy in a folder only that user can enter, mounted
        read-only at ``_KEY_IN_CONTAINER``.
        """
        key = await self._dev_signing_key()
        if self.containers is None:
            return str(key), {}
        folder = key.parent / "container"
        folder.mkdir(mode=0o700, exist_ok=True)
        copy = folder / key.name
        shutil.copyfile(key, copy)
        copy.chmod(0o644)
        return _KEY_IN_CONTAINER, {copy: _KEY_IN_CONTAINER}

    def _child(
        self,
        name: str,
        module: str,
        env: dict[str, str],
        *,
        color: str,
        mounts: Mapping[Path, str] | None = None,
        args: Sequence[str] = (),
    ) -> Child:
        """A component run from this virtualenv, or from its image (``images``)."""
        color = color if sys.stdout.isatty() else ""
        if self.containers is None:
            return Child(name, [sys.executable, "-m", module, *args], env, color=color)
        mounts = dict(mounts or {})
        if self.postgres is not None and any(k.endswith(_DSN_SETTINGS) for k in env):
            socket = self.postgres.socket
            mounts[socket] = f"{_PG_SOCKET_DIR_IN_CONTAINER}/{socket.name}"
            env = {
                k: _socket_dsn(v, _PG_SOCKET_DIR_IN_CONTAINER) if k.endswith(_DSN_SETTINGS) else v
                for k, v in env.items()
            }
        argv = self.containers.argv(name, env, mounts=mounts, args=args)
        return Child(name, argv, env, color=color, containers=self.containers)

    async def _migrate(self, database_url: str) -> None:
        """Apply the migrations as the database owner (in-process, or from the image)."""
        if self.containers is None:
            applied = await migrate(dsn=database_url, root=default_migrations_dir())
            say(f"migrations: {len(applied)} applied, schema up to date")
            return
        env = child_environment() | {"MIGRATE_DATABASE_URL": database_url}
        runner = self._child("migrations", "portico_migrations", env, color="", args=["up"])
        await runner.start()
        if await runner.wait() != 0:
            raise StartupError(
                f"migrations from {self.containers.image('migrations')} failed (output above)"
            )
        say(f"migrations: applied from {self.containers.image('migrations')}")

    async def _service_dsns(self, database_url: str, env: dict[str, str]) -> dict[str, str]:
        """Each service's DSN: its own login role (least privilege), never the owner's.

        Embedded PostgreSQL: the launcher creates the login roles with passwords new each run
        (:mod:`portico_devstack.roles`). An external ``DATABASE_URL``: the operator's
        ``<SERVICE>_POSTGRES__DSN`` per service; a service without one falls back to
        ``DATABASE_URL`` (the owner), and the launcher says that least privilege is not in force.
        """
        if self.postgres is not None:
            passwords = roles.new_passwords()
            await roles.ensure_login_roles(database_url, passwords)
            say("PostgreSQL: each service logs in as its own role (portico_<service>_app)")
            return {
                service: roles.service_dsn(database_url, service, password)
                for service, password in passwords.items()
            }
        dsns: dict[str, str] = {}
        for service in roles.SERVICES:
            own = env.get(f"{service.upper()}_POSTGRES__DSN")
            if own:
                dsns[service] = own
            else:
                dsns[service] = database_url
                say(
                    f"PostgreSQL: no {service.upper()}_POSTGRES__DSN, so {service} uses "
                    "DATABASE_URL: least privilege is NOT in force for it (docs/data-stores.md)"
                )
        return dsns

    def _valkey_urls(self, valkey_url: str, env: dict[str, str]) -> dict[str, str]:
        """Each component's Valkey URL: its own ACL user (:mod:`portico_devstack.valkey_acl`).

        Embedded Valkey: the users the launcher started it with. An external ``VALKEY_URL``: the
        operator's ``GATEWAY_VALKEY_URL`` / ``<SERVICE>_VALKEY__URL``; a component without one
        falls back to ``VALKEY_URL``, and the launcher says that least privilege is not in force.
        """
        if self.valkey is not None:
            return {c: self.valkey.user_url(c) for c in valkey_acl.COMPONENTS}
        urls: dict[str, str] = {}
        for component in valkey_acl.COMPONENTS:
            name = (
                "GATEWAY_VALKEY_URL"
                if component == "gateway"
                else f"{component.upper()}_VALKEY__URL"
            )
            urls[component] = env.get(name) or valkey_url
            if not env.get(name):
                say(
                    f"Valkey: no {name}, so {component} uses VALKEY_URL: least privilege is NOT "
                    "in force for it (docs/data-stores.md)"
                )
        return urls

    async def start(self) -> None:
        s = self.settings
        ports = (
            ("gateway", s.gateway_port),
            ("users", s.users_port),
            ("auth", s.auth_port),
            ("audit", s.audit_port),
            ("users metrics", s.users_metrics_port),
            ("auth metrics", s.auth_metrics_port),
            ("audit metrics", s.audit_metrics_port),
        )
        for name, port in ports:
            if port and not _port_free(s.host, port):
                raise StartupError(f"{s.host}:{port} ({name}) is already in use: another stack?")
        if s.database_url is not None:
            database_url = s.database_url.get_secret_value()
            say("PostgreSQL: using DATABASE_URL")
        else:
            self.postgres = EmbeddedPostgres(s.data_dir / "postgres")
            await asyncio.to_thread(self.postgres.start)
            await self.postgres.ensure_database()
            database_url = self.postgres.dsn
            say(f"PostgreSQL: embedded, data in {self.postgres.data_dir}")
        if s.valkey_url is not None:
            valkey_url = s.valkey_url.get_secret_value()
            say("Valkey: using VALKEY_URL")
        else:
            passwords = valkey_acl.new_passwords()
            self.valkey = EmbeddedValkey(
                s.data_dir / "valkey", port=s.valkey_port, passwords=passwords, memory=STATE_MEMORY
            )
            await asyncio.to_thread(self.valkey.start)
            valkey_url = self.valkey.url
            # The users cache on an instance of its own: it may evict, the state one never does.
            self.valkey_cache = EmbeddedValkey(
                s.data_dir / "valkey-cache", passwords=passwords, memory=CACHE_MEMORY
            )
            await asyncio.to_thread(self.valkey_cache.start)
            say(
                f"Valkey: embedded, state at 127.0.0.1:{self.valkey.port} (noeviction), cache at "
                f"127.0.0.1:{self.valkey_cache.port} (allkeys-lru); one ACL user per component"
            )
        await self._migrate(database_url)

        env = child_environment() | {"PYTHONUNBUFFERED": "1"}
        key_file, key_mount = await self._signing_key_for_auth()
        dsns = await self._service_dsns(database_url, env)
        valkey_urls = self._valkey_urls(valkey_url, env)
        # The users cache's instance: the users service writes it, the gateway's edge path reads
        # it (its ACL user may only HMGET the user entries there).
        cache_url, edge_cache_url = (
            (
                {"USERS_VALKEY__CACHE_URL": self.valkey_cache.user_url("users")},
                {"GATEWAY_VALKEY_CACHE_URL": self.valkey_cache.user_url("gateway")},
            )
            if self.valkey_cache is not None
            else ({}, {})
        )
        # The gateway's proof to the auth service that its x-forwarded-for is believable
        # (portico_common.forwarding): a fresh secret per run, like the stores' passwords.
        forwarder_key = secrets.token_urlsafe(32)
        for prefix in (
            "USERS",
            "AUTH",
            "AUDIT",
            "GATEWAY",
        ):  # readable by default behind the prefixes
            env.setdefault(f"{prefix}_LOG_FORMAT", s.log_format)
        users = self._child(
            "users",
            "portico_users",
            env
            | {
                "USERS_POSTGRES__DSN": dsns["users"],
                "USERS_VALKEY__URL": valkey_urls["users"],
                **cache_url,
                "USERS_GRPC_HOST": s.host,
                "USERS_GRPC_PORT": str(s.users_port),
                "USERS_METRICS_PORT": str(s.users_metrics_port),
                "USERS_AUTH_TARGET": self.auth_target,  # JWKS, fetched on first use
            },
            color=_COLORS[0],
        )
        auth = self._child(
            "auth",
            "portico_auth",
            env
            | {
                "AUTH_POSTGRES__DSN": dsns["auth"],
                "AUTH_VALKEY__URL": valkey_urls["auth"],
                "AUTH_GRPC_HOST": s.host,
                "AUTH_GRPC_PORT": str(s.auth_port),
                "AUTH_METRICS_PORT": str(s.auth_metrics_port),
                "AUTH_USERS_TARGET": self.users_target,
                "AUTH_ENVIRONMENT": "dev",
                "AUTH_ADMIN_EMAILS": env.get("AUTH_ADMIN_EMAILS", s.admin_email),
                "AUTH_SIGNING_KEY_FILES": key_file,
                "AUTH_FORWARDER_KEYS": forwarder_key,
            },
            color=_COLORS[2],
            mounts=key_mount,
        )
        audit = self._child(
            "audit",
            "portico_audit",
            env
            | {
                "AUDIT_POSTGRES__DSN": dsns["audit"],
                "AUDIT_VALKEY__URL": valkey_urls["audit"],
                "AUDIT_GRPC_HOST": s.host,
                "AUDIT_GRPC_PORT": str(s.audit_port),
                "AUDIT_METRICS_PORT": str(s.audit_metrics_port),
                "AUDIT_AUTH_TARGET": self.auth_target,  # JWKS, fetched on first use
            },
            color=_COLORS[3],
        )
        gateway = self._child(
            "gateway",
            "portico_gateway",
            env
            | {
                "GATEWAY_HOST": s.host,
                "GATEWAY_PORT": str(s.gateway_port),
                "GATEWAY_USERS_TARGET": self.users_target,
                "GATEWAY_AUTH_TARGET": self.auth_target,
                "GATEWAY_AUDIT_TARGET": self.audit_target,
                "GATEWAY_VALKEY_URL": valkey_urls["gateway"],
                **edge_cache_url,
                "GATEWAY_ENVIRONMENT": "dev",
                "GATEWAY_FORWARDER_KEY": forwarder_key,
            },
            color=_COLORS[1],
        )
        self.children = [users, auth, audit, gateway]
        await users.start()
        await _wait_ready(users, lambda: _grpc_serving(self.users_target), s.ready_timeout_s)
        await auth.start()
        await _wait_ready(auth, lambda: _grpc_serving(self.auth_target), s.ready_timeout_s)
        await audit.start()
        await _wait_ready(audit, lambda: _grpc_serving(self.audit_target), s.ready_timeout_s)
        await gateway.start()
        ready_url = f"{self.gateway_url}/readyz"
        await _wait_ready(gateway, lambda: _http_ready(ready_url), s.ready_timeout_s)
        if s.observe:
            await self._start_prometheus(env)

    def _scrape_targets(self) -> list[prometheus.Target]:
        s = self.settings
        host = prometheus.scrape_host(s.host)
        targets = [prometheus.Target("gateway", f"{host}:{s.gateway_port}")]
        for job, port in (
            ("users", s.users_metrics_port),
            ("auth", s.auth_metrics_port),
            ("audit", s.audit_metrics_port),
        ):
            if port:
                targets.append(prometheus.Target(job, f"{host}:{port}"))
        return targets

    async def _start_prometheus(self, env: dict[str, str]) -> None:
        """Run Prometheus on loopback when one is installed; else say why not and go on."""
        s = self.settings
        binary = prometheus.find_binary(s.prometheus_binary)
        if binary is None:
            self.prometheus_note = (
                f"OBSERVE: no Prometheus server ({s.prometheus_binary!r} is not installed or "
                f"not on PATH), so none runs; {prometheus.INSTALL_HINT}"
            )
            say(self.prometheus_note)
            return
        port = s.prometheus_port
        if port and not _port_free("127.0.0.1", port):
            say(f"Prometheus: 127.0.0.1:{port} is in use; taking a free port instead")
            port = 0
        port = port or _free_port()
        data = (s.data_dir / "prometheus").resolve()
        rules = prometheus.rules_dir()
        if not rules.is_dir():
            say(f"Prometheus: no rules at {rules} (not a source checkout?); scraping only")
        config = prometheus.write_config(
            data, self._scrape_targets(), [rules / "*.yaml"] if rules.is_dir() else []
        )
        listen = f"127.0.0.1:{port}"
        child = Child(
            "prom",
            prometheus.argv(binary, config_file=config, data_dir=data, listen=listen),
            env,
            color=_COLORS[3] if sys.stdout.isatty() else "",
            essential=False,
        )
        url = f"http://{listen}"
        self.children.append(child)  # from now on stop() stops it, even mid-start
        await child.start()
        try:
            await _wait_ready(child, lambda: _http_ready(f"{url}/-/ready"), s.ready_timeout_s)
        except StartupError as exc:
            await child.stop(timeout_s=s.stop_timeout_s, force=self.force)
            self.children.remove(child)
            self.prometheus_note = f"OBSERVE: Prometheus did not start ({exc}); running without it"
            say(self.prometheus_note)
            return
        self.prometheus_url = url
        say(f"Prometheus: {binary}, data and config in {data}")

    async def wait_for_exit(self) -> Child:
        """Return the first service (essential child) that exits."""
        waits = {asyncio.create_task(c.wait()): c for c in self.children if c.essential}
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return waits[done.pop()]

    async def stop(self) -> None:
        """Stop children in reverse start order, then the embedded backends."""
        for child in reversed(self.children):
            code = await child.stop(timeout_s=self.settings.stop_timeout_s, force=self.force)
            if code is not None:
                say(f"{child.name} stopped (exit code {code})")
        if self.valkey_cache is not None:
            await asyncio.to_thread(self.valkey_cache.stop)
        if self.valkey is not None:
            await asyncio.to_thread(self.valkey.stop)
            say("Valkey stopped")
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.stop)
            say("PostgreSQL stopped; data kept")


async def run(settings: DevSettings) -> int:
    """Run the stack until a signal (exit 0) or a child's own exit (exit 1)."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    stack = Stack(settings)

    def on_signal() -> None:
        if stop_requested.is_set():
            stack.force.set()
        stop_requested.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    started = time.monotonic()
    code = 0
    try:
        starting = asyncio.create_task(stack.start())
        stopper = asyncio.create_task(stop_requested.wait())
        await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return 0
        starting.result()
        say(f"ready in {time.monotonic() - started:.2f} s")
        say(f"REST      {stack.gateway_url}/v1/users")
        say(f"API docs  {stack.gateway_url}/docs   (OpenAPI: {stack.gateway_url}/openapi.json)")
        say(f"gRPC      {stack.users_target}  (portico.users.v1.UserService, reflection on)")
        say(f"gRPC      {stack.auth_target}  (portico.auth.v1.AuthService, reflection on)")
        say(f"gRPC      {stack.audit_target}  (portico.audit.v1.AuditService, reflection on)")
        if stack.prometheus_url is not None:
            url = stack.prometheus_url
            say(f"Prometheus {url}  (targets, rules, alerts: {url}/targets, /rules, /alerts)")
        elif stack.prometheus_note:
            say(stack.prometheus_note)
        say("Ctrl-C stops everything")
        exited = asyncio.create_task(stack.wait_for_exit())
        await asyncio.wait({exited, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            child = exited.result()
            say(f"{child.name} exited unexpectedly with code {child.returncode}; stopping")
            code = 1
        else:
            exited.cancel()
            say("stopping")
        stopper.cancel()
    except StartupError as exc:
        say(f"cannot start: {exc}")
        code = 1
    finally:
        await stack.stop()
    return code
