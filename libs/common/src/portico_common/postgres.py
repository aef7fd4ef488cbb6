"""PostgreSQL as every service uses it: the pool, one call's connection and deadline, the ping.

``open_pool`` starts even while PostgreSQL is down: the pool is then empty and connects on
demand, health says NOT_SERVING, calls answer UNAVAILABLE, and all of it recovers when
PostgreSQL returns. ``close_pool`` never hangs a shutdown on a stuck connection.

A repository derives from :class:`Repository` (the pool, the query limit, and what database
failures become in its service: :class:`DatabaseErrors`). Each call takes its connection and its
:class:`Deadline` (the configured query limit, or the caller's gRPC deadline when it ends sooner)
with ``self._connect(time_left)``, through :func:`connection`, which turns database failures into
the service errors of :mod:`portico_common.errors`; :func:`from_row` makes a row into the
service's dataclass. :func:`ping` is the health probe's question.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from pydantic import SecretStr

from portico_common.deadlines import call_time_left
from portico_common.errors import DeadlineExceeded, ServiceError, Unavailable

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_log = logging.getLogger(__name__)

_POOL_CLOSE_TIMEOUT_S = 5.0

Row = TypeVar("Row", bound="DataclassInstance")


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


#: Failures that mean "PostgreSQL cannot serve us right now" once a connection was handed out.
CONNECTION_LOST: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.InsufficientResourcesError,
    asyncpg.exceptions.OperatorInterventionError,
    # A connection the server terminated (pg_terminate_backend, a restart) can surface as an
    # internal client error on its next use instead of a connection error.
    asyncpg.exceptions.InternalClientError,
)


class Deadline:
    """The time a call may still spend on the database, measured on the monotonic clock.

    The budget is the configured limit, or less: the caller's deadline (``time_left``, or the
    current gRPC call's, see :mod:`portico_common.deadlines`) when it ends sooner.
    """

    def __init__(self, limit: float, time_left: float | None = None) -> None:
        caller = time_left if time_left is not None else call_time_left()
        budget = limit if caller is None else min(caller, limit)
        self._end = time.monotonic() + budget

    def left(self) -> float:
        """Seconds left; raises ``DeadlineExceeded`` when none are."""
        remaining = self._end - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded()
        return remaining


def _unavailable() -> ServiceError:
    return Unavailable()


@asynccontextmanager
async def connection(
    pool: asyncpg.Pool[asyncpg.Record],
    deadline: Deadline,
    *,
    unavailable: Callable[[], ServiceError] = _unavailable,
    unique_violation: Callable[[], ServiceError] | None = None,
) -> AsyncIterator[PoolConnectionProxy[asyncpg.Record]]:
    """A pool connection for one call, with database failures turned into service errors.

    Acquiring and every query are limited by ``deadline`` (the caller passes ``deadline.left()``
    to each query); running out of time is ``DeadlineExceeded``; a connection that cannot be
    opened or is lost is ``unavailable()``; a unique violation is ``unique_violation()`` when
    given. The original exception is chained (``__cause__``) for the server log.
    """
    try:
        conn = await pool.acquire(timeout=deadline.left())
    except TimeoutError as exc:
        raise DeadlineExceeded() from exc
    except Exception as exc:  # any failure to connect (refused, auth, no such db, ...)
        _log.warning("cannot get a PostgreSQL connection: %s: %s", type(exc).__name__, exc)
        raise unavailable() from exc
    try:
        yield conn
    except (TimeoutError, asyncpg.QueryCanceledError) as exc:
        raise DeadlineExceeded() from exc
    except asyncpg.UniqueViolationError as exc:
        if unique_violation is None:
            raise
        raise unique_violation() from exc
    except CONNECTION_LOST as exc:
        _log.warning("PostgreSQL connection failed: %s: %s", type(exc).__name__, exc)
        raise unavailable() from exc
    finally:
        try:
            await pool.release(conn, timeout=1.0)
        except Exception:  # the pool already dropped the broken connection
            _log.debug("releasing a connection failed", exc_info=True)


@dataclass(frozen=True, slots=True)
class DatabaseErrors:
    """What database failures become in one service: its ``Unavailable`` (with its wording) and,
    where a unique index means something to its callers, the error a unique violation becomes
    (without one, a unique violation stays asyncpg's)."""

    unavailable: Callable[[], ServiceError] = _unavailable
    unique_violation: Callable[[], ServiceError] | None = None


class Repository:
    """The base of a service's repository: its SQL runs on ``pool``, each call within
    ``query_timeout_s`` (or the caller's deadline when it ends sooner, see :class:`Deadline`).

    A subclass sets :attr:`errors` and runs each call in ``async with self._connect(time_left)
    as (conn, deadline)``, passing ``timeout=deadline.left()`` to each query.
    """

    #: What database failures become in this service.
    errors: ClassVar[DatabaseErrors] = DatabaseErrors()

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], *, query_timeout_s: float) -> None:
        self._pool = pool
        self._limit = query_timeout_s

    @asynccontextmanager
    async def _connect(
        self, time_left: float | None = None, *, transaction: bool = False
    ) -> AsyncIterator[tuple[PoolConnectionProxy[asyncpg.Record], Deadline]]:
        """A connection for one call (in a transaction, with ``transaction``) and the call's
        :class:`Deadline` (``time_left``: the caller's remaining time, when it passes it);
        database failures become this service's errors."""
        deadline = Deadline(self._limit, time_left)
        async with connection(
            self._pool,
            deadline,
            unavailable=self.errors.unavailable,
            unique_violation=self.errors.unique_violation,
        ) as conn:
            if not transaction:
                yield conn, deadline
                return
            async with conn.transaction():
                yield conn, deadline


class Columns(Protocol):
    """A row's columns by name (an ``asyncpg.Record``)."""

    def __getitem__(self, name: str, /) -> Any: ...


def from_row(cls: type[Row], row: Columns, **values: Any) -> Row:
    """The dataclass ``cls`` from the columns of ``row`` named like its fields; ``values`` are
    fields given instead (a column that needs converting)."""
    columns = {f.name: row[f.name] for f in dataclasses.fields(cls) if f.name not in values}
    return cls(**columns, **values)


async def ping(*, dsn: str, time_limit_s: float) -> None:
    """Raise ``Unavailable`` unless PostgreSQL answers ``SELECT 1`` within ``time_limit_s``.

    Uses a connection of its own, not the pool: a pool busy with slow queries is not a dead
    database, and the health probe must not say otherwise.
    """
    try:
        conn = await asyncpg.connect(dsn, timeout=time_limit_s)
        try:
            await conn.fetchval("SELECT 1", timeout=time_limit_s)
        finally:
            await conn.close(timeout=time_limit_s)
    except Exception as exc:  # refused, timed out, auth, shutting down, ...
        raise Unavailable(f"PostgreSQL does not answer: {type(exc).__name__}") from exc
