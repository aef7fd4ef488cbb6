"""The asyncpg pool every service opens the same way, and the gRPC bind address.

``open_pool`` starts even while PostgreSQL is down: the pool is then empty and connects on
demand, health says NOT_SERVING, calls answer UNAVAILABLE, and all of it recovers when
PostgreSQL returns. ``close_pool`` never hangs a shutdown on a stuck connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import asyncpg
from pydantic import SecretStr

_log = logging.getLogger(__name__)

_POOL_CLOSE_TIMEOUT_S = 5.0


class PoolSettings(Protocol):
    """What each service's ``PostgresSettings`` provides."""

    @property
    def dsn(self) -> SecretStr: ...
    @property
    def pool_min(self) -> int: ...
    @property
    def pool_max(self) -> int: ...
    @property
    def connect_timeout_s(self) -> float: ...
    @property
    def query_timeout_s(self) -> float: ...
    @property
    def statement_timeout_ms(self) -> int: ...


async def open_pool(pg: PoolSettings, *, application_name: str) -> asyncpg.Pool[asyncpg.Record]:
    """The pool, with ``pool_min`` connections open; empty (lazy) while PostgreSQL is down."""
    options: dict[str, Any] = {
        "max_size": pg.pool_max,
        "timeout": pg.connect_timeout_s,
        "command_timeout": pg.query_timeout_s,
        "server_settings": {
            "application_name": application_name,
            "statement_timeout": str(pg.statement_timeout_ms),
        },
    }
    dsn = pg.dsn.get_secret_value()
    try:
        return await asyncpg.create_pool(dsn, min_size=min(pg.pool_min, pg.pool_max), **options)
    except Exception as exc:  # down, refusing, not ready: start anyway, connect on demand
        _log.warning("PostgreSQL unavailable at startup (%s); starting anyway", type(exc).__name__)
    return await asyncpg.create_pool(dsn, min_size=0, **options)


async def close_pool(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    """Close ``pool``, terminating it when connections do not close in time."""
    try:
        await asyncio.wait_for(pool.close(), _POOL_CLOSE_TIMEOUT_S)
    except TimeoutError:
        _log.warning("PostgreSQL pool did not close in time; terminating it")
        pool.terminate()


def bind_address(host: str, port: int) -> str:
    """``host:port`` for grpc's ``add_insecure_port`` (IPv6 literals bracketed)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"
