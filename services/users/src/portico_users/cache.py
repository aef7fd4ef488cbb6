"""A Valkey read-through cache of users by id, in front of the repository.

Reads: ``HGET <prefix>user:<id> d`` holds the user as serialized ``portico.users.v1.User``
bytes (its etag carries the row version). On a miss, one in-process "flight" per id loads the
row from PostgreSQL, however many callers missed at once; they all await that one load (with
the first caller's deadline; a caller that gives up does not cancel it for the others).

The key after the prefix is the one GetUser's ``portico.edge.v1.cacheable`` option declares
(``user:{id}``): the gateway reads these entries itself for GetUser and GetCurrentUser, after its
own access check, and derives the same key from the same option
(:class:`portico_common.cacheable.ResourceKey`). Hence the guarantees below hold for the
gateway's reads too: an update or delete is in Valkey before the RPC answers.

Keeping a read after a successful write from ever seeing stale data:

* Each entry is a hash ``{v: version, d: bytes}``. Every write into the cache goes through one
  Lua script (atomic in Valkey) that stores a row only if its version is *newer* than the one
  held. A writer stores the row its UPDATE returned; a reader fills the row it loaded.
* The race this closes: a reader misses and loads version 1; a writer commits version 2 and
  stores it; the slow reader then tries to fill version 1. The script refuses (1 <= 2). Had the
  writer merely deleted the key, the late fill would have resurrected version 1 for a whole TTL.
* A delete leaves a tombstone ``{v: "deleted"}`` for ``tombstone_ttl_s`` (longer than any read
  may take), which refuses every fill; reads treat it as a miss and PostgreSQL says NOT_FOUND.
  Ids are server-generated UUIDs and never reused, so a tombstone never hides a new user.
* Cache writes after a database write are shielded from the RPC's cancellation, so a client
  that hangs up right after the commit does not leave the old row cached.

Valkey is an optimization: when it fails (down, slow past its socket timeout, bad data) we log
once per outage and carry on against PostgreSQL. The one window that remains is a write whose
cache update fails while Valkey is unreachable yet keeps its data; that entry then ages out
within ``cache_ttl_s``.

Telemetry: each Valkey round trip is a client span (``valkey HGET``, ``valkey fill``,
``valkey tombstone``; valkey-py has no OpenTelemetry instrumentation of its own), reads carry
``portico.users.cache_hit``, and ``portico_users_cache_requests_total{result=hit|miss|error}``
counts the reads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from functools import partial
from uuid import UUID

from google.protobuf.message import DecodeError
from opentelemetry import trace
from prometheus_client import Counter
from valkey.asyncio import Valkey
from valkey.exceptions import ValkeyError

from portico.users.v1 import users_pb2
from portico_common.cacheable import ResourceKey, resource_key
from portico_common.logs import OutageLog
from portico_users.codec import user_from_proto, user_to_proto
from portico_users.domain import Cursor, Page, User, UserChanges, UserStore

_log = logging.getLogger(__name__)

_TOMBSTONE = "deleted"
# KEYS[1] = entry, ARGV = version, user bytes, ttl ms. Stores only a newer version.
_FILL = f"""
local held = redis.call('HGET', KEYS[1], 'v')
if held == '{_TOMBSTONE}' then return 0 end
if held and tonumber(held) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
# KEYS[1] = entry, ARGV = ttl ms. Replaces whatever is held by a tombstone.
_BURY = f"""
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', '{_TOMBSTONE}')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""
_VALKEY_FAILURES = (ValkeyError, OSError, DecodeError, ValueError)
#: The key of a user's entry after the prefix, as GetUser declares it (``user:{id}``).
_GET_USER = users_pb2.DESCRIPTOR.services_by_name["UserService"].methods_by_name["GetUser"]
_tracer = trace.get_tracer(__name__)  # a proxy: spans go to whichever provider is set later
CACHE_HIT = "portico.users.cache_hit"


@functools.cache
def cache_requests() -> Counter:
    """``portico_users_cache_requests_total{result}``: cache reads by outcome, each result at 0
    from the start (with the gateway answering cached reads itself, a service may see no hit
    for a long time; a rule's ``rate()`` still has a series to read)."""
    counter = Counter(
        "portico_users_cache_requests",
        "Reads of the users cache, by result (hit, miss, error).",
        ["result"],
    )
    for result in ("hit", "miss", "error"):
        counter.labels(result)
    return counter


def _span(operation: str) -> trace.Span:
    return _tracer.start_span(
        f"valkey {operation}",
        kind=trace.SpanKind.CLIENT,
        attributes={"db.system.name": "valkey", "db.operation.name": operation},
    )


class CachedUsers:
    """``UserStore`` that reads through Valkey and keeps it coherent on writes."""

    def __init__(
        self,
        store: UserStore,
        client: Valkey,
        *,
        ttl_s: float,
        tombstone_ttl_s: float,
        key_prefix: str,
    ) -> None:
        self._store = store
        self._client = client
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._tombstone_ttl_ms = max(1, round(tombstone_ttl_s * 1000))
        self._prefix = key_prefix
        key = resource_key(_GET_USER)
        if key is None or key.variables != ("id",):
            raise RuntimeError("GetUser must declare a portico.edge.v1.cacheable key over its id")
        self._key: ResourceKey = key
        self._fill = client.register_script(_FILL)
        self._bury = client.register_script(_BURY)
        self._flights: dict[UUID, asyncio.Task[User]] = {}
        self._outage = OutageLog(
            _log,
            down="Valkey %s failed, serving from PostgreSQL: %s: %s",
            up="Valkey answers again, cache back in use",
        )
        reads = cache_requests()
        self._hits, self._misses, self._errors = (reads.labels(r) for r in ("hit", "miss", "error"))

    def key(self, user_id: UUID) -> str:
        """The Valkey key of a user's entry."""
        return f"{self._prefix}{self._key.fill({'id': str(user_id)})}"

    # ---------------------------------------------------------------- reads

    async def get_user(self, *, user_id: UUID, time_left: float | None = None) -> User:
        cached = await self._read(user_id)
        if cached is not None:
            return cached
        flight = self._flights.get(user_id)
        if flight is None:
            flight = asyncio.create_task(self._load(user_id, time_left))
            self._flights[user_id] = flight
            flight.add_done_callback(partial(self._landed, user_id))
        # shield: a caller that gives up does not cancel the load the others wait for.
        return await asyncio.shield(flight)

    async def _load(self, user_id: UUID, time_left: float | None) -> User:
        user = await self._store.get_user(user_id=user_id, time_left=time_left)
        await self.store(user)
        return user

    def _landed(self, user_id: UUID, flight: asyncio.Task[User]) -> None:
        if self._flights.get(user_id) is flight:
            del self._flights[user_id]
        if not flight.cancelled():
            flight.exception()  # retrieved: waiters re-raise it; nobody else must log it

    async def _read(self, user_id: UUID) -> User | None:
        with trace.use_span(_span("HGET"), end_on_exit=True) as span:
            try:
                data = await self._client.hget(self.key(user_id), "d")  # type: ignore[misc]
                user = None if data is None else user_from_proto(users_pb2.User.FromString(data))
            except _VALKEY_FAILURES as exc:
                span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                self._errors.inc()
                self._outage.failed(exc, "read")
                return None
            span.set_attribute(CACHE_HIT, user is not None)
        (self._misses if user is None else self._hits).inc()
        self._outage.succeeded()
        return user

    async def list_users(
        self, *, page_size: int, after: Cursor | None, time_left: float | None = None
    ) -> Page:
        return await self._store.list_users(page_size=page_size, after=after, time_left=time_left)

    # ---------------------------------------------------------------- writes

    async def create_user(
        self,
        *,
        email: str,
        display_name: str,
        actor: str | None = None,
        time_left: float | None = None,
    ) -> User:
        return await self._store.create_user(
            email=email, display_name=display_name, actor=actor, time_left=time_left
        )

    async def update_user(
        self,
        *,
        user_id: UUID,
        changes: UserChanges,
        etag: str | None,
        actor: str | None = None,
        time_left: float | None = None,
    ) -> User:
        user = await self._store.update_user(
            user_id=user_id, changes=changes, etag=etag, actor=actor, time_left=time_left
        )
        await asyncio.shield(self.store(user))
        return user

    async def delete_user(
        self,
        *,
        user_id: UUID,
        etag: str | None,
        actor: str | None = None,
        time_left: float | None = None,
    ) -> None:
        await self._store.delete_user(user_id=user_id, etag=etag, actor=actor, time_left=time_left)
        await asyncio.shield(self.forget(user_id))

    async def store(self, user: User) -> bool:
        """Cache ``user`` unless a newer version or a tombstone is held; True if stored."""
        data = user_to_proto(user).SerializeToString()
        try:
            with trace.use_span(_span("fill"), end_on_exit=True):
                stored = await self._fill(
                    keys=[self.key(user.id)], args=[user.version, data, self._ttl_ms]
                )
        except _VALKEY_FAILURES as exc:
            self._outage.failed(exc, "write")
            return False
        self._outage.succeeded()
        return bool(stored)

    async def forget(self, user_id: UUID) -> None:
        """Replace the user's entry by a tombstone (the user was deleted)."""
        try:
            with trace.use_span(_span("tombstone"), end_on_exit=True):
                await self._bury(keys=[self.key(user_id)], args=[self._tombstone_ttl_ms])
        except _VALKEY_FAILURES as exc:
            self._outage.failed(exc, "tombstone")
            return
        self._outage.succeeded()
