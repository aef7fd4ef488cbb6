"""Every Valkey client of every component, built in one place: a plain URL or through Sentinel.

A component's Valkey setting is a URL (``GATEWAY_VALKEY_URL``, ``USERS_VALKEY__URL``, …) in one
of two forms:

``redis://[user:password@]host:port/db`` (also ``rediss://``, ``unix://``)
    One server, as ``Valkey.from_url`` reads it: local development, tests, a single instance.

``valkey+sentinel://[user:password@]host:port[,host:port…]/<primary name>[/db][?query]``
    The Sentinel deployment (docs/valkey-ha.md): the hosts are **Sentinels** (port 26379 when
    left out), ``<primary name>`` the name they monitor (``portico``), ``user:password`` the
    component's ACL user on the data nodes. ``sentinel_username`` / ``sentinel_password`` in the
    query authenticate to the Sentinels themselves (none by default). Example::

        valkey+sentinel://gateway:s3cret@valkey-0.valkey-headless:26379,valkey-1.valkey-headless:26379,valkey-2.valkey-headless:26379/portico/0?sentinel_password=t0p

One URL keeps each component's setting a single secret value (the password sits in it), works
for the gateway's flat settings and the services' nested ones alike, and lets any new client
(the users cache, a second gateway client) go through Sentinel by its URL alone.

Following a failover (:func:`client` in Sentinel form): the client is
``Sentinel(...).master_for(name)``, whose every new connection first asks a Sentinel for the
current primary. A connection to the dead primary fails (``ConnectionError``, or
``TimeoutError`` when the host vanished); a connection to a demoted primary answers writes with
``READONLY``, which the Sentinel-managed connection turns into a ``ConnectionError`` after
dropping itself. Either way the command is retried (:data:`RETRIES` times, exponential backoff
from :data:`BACKOFF_BASE_S` capped at :data:`BACKOFF_CAP_S`) on a new connection, to the primary
Sentinel names by then. The retries are bounded so a command fails within about a second and the
caller's own policy applies (the gateway's 503 with ``Retry-After``, the session store's fail
mode, the relay's backoff). Commands that were sent when the connection broke may be applied
twice (a rate-limit ``INCR``): acceptable for what Portico keeps in Valkey (docs/valkey-ha.md).
A Sentinel that sees no other Sentinel is not believed (``min_other_sentinels``), so an isolated
one cannot send clients to a stale primary.

A plain URL keeps the client exactly as before (no retries): a single server has nowhere else
to go, and the callers' fast failures are what the fault drills measure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qs, unquote

from pydantic import AfterValidator, SecretStr
from valkey.asyncio import Valkey
from valkey.asyncio.retry import Retry
from valkey.asyncio.sentinel import Sentinel
from valkey.backoff import ExponentialBackoff
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import ReadOnlyError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

#: The URL scheme that selects Sentinel.
SENTINEL_SCHEME = "valkey+sentinel"
DEFAULT_SENTINEL_PORT = 26379
#: Retries of one command after a connection error, a timeout or READONLY (Sentinel form).
RETRIES = 3
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 0.5
_QUERY_KEYS = frozenset({"sentinel_username", "sentinel_password"})


class InvalidValkeyUrl(ValueError):  # noqa: N818 (reads as the condition, like the others)
    """A ``valkey+sentinel://`` URL that cannot be used; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """A parsed ``valkey+sentinel://`` URL (see the module docstring)."""

    sentinels: tuple[tuple[str, int], ...]
    primary: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def is_sentinel_url(url: str) -> bool:
    return url.lower().startswith(f"{SENTINEL_SCHEME}://")


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The parts of a ``valkey+sentinel://`` URL; :class:`InvalidValkeyUrl` when malformed."""
    if not is_sentinel_url(url):
        raise InvalidValkeyUrl(f"not a {SENTINEL_SCHEME}:// URL")
    rest = url[len(SENTINEL_SCHEME) + 3 :]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        userinfo, hosts = "", netloc
    username: str | None = None
    password: str | None = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_host_port(part) for part in hosts.split(",") if part.strip())
    if not sentinels:
        raise InvalidValkeyUrl("names no Sentinel (host:port after //)")
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise InvalidValkeyUrl("the path must be /<primary name> or /<primary name>/<db>")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise InvalidValkeyUrl(f"the database must be a number, not {parts[1]!r}")
        db = int(parts[1])
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - _QUERY_KEYS)
    if unknown:
        raise InvalidValkeyUrl(f"unknown option(s) {unknown}; known: {sorted(_QUERY_KEYS)}")
    return SentinelTarget(
        sentinels=sentinels,
        primary=unquote(parts[0]),
        db=db,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username", [None])[-1] or None,
        sentinel_password=options.get("sentinel_password", [None])[-1] or None,
    )


def _host_port(part: str) -> tuple[str, int]:
    host, colon, port = part.strip().rpartition(":")
    if not colon:
        return part.strip(), DEFAULT_SENTINEL_PORT
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidValkeyUrl(f"not a Sentinel address: {part.strip()!r} (host:port)")
    return host, int(port)


def retry_policy() -> Retry:
    """Bounded exponential backoff for the Sentinel form (see the module docstring)."""
    return Retry(ExponentialBackoff(cap=BACKOFF_CAP_S, base=BACKOFF_BASE_S), RETRIES)


#: What counts as "this connection is gone, ask Sentinel again".
RETRY_ON: Sequence[type[Exception]] = (ValkeyConnectionError, ValkeyTimeoutError, ReadOnlyError)


class SentinelValkey(Valkey):
    """The primary's client, which also closes its connections to the Sentinels."""

    #: The clients of the Sentinels this primary is found through.
    sentinel_clients: Sequence[Valkey] = ()

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for each in self.sentinel_clients:
            await each.aclose()


def client(url: str, *, socket_timeout_s: float, connect_timeout_s: float) -> Valkey:
    """A client for ``url`` (plain or ``valkey+sentinel://``) with these time limits."""
    if not is_sentinel_url(url):
        plain: Valkey = Valkey.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=connect_timeout_s
        )
        return plain
    target = parse_sentinel_url(url)
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": connect_timeout_s,
    }
    if target.sentinel_username:
        sentinel_kwargs["username"] = target.sentinel_username
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        # One Sentinel alone may be cut off from the others: believe it only when it sees one.
        min_other_sentinels=min(1, len(target.sentinels) - 1),
        sentinel_kwargs=sentinel_kwargs,
    )
    primary: SentinelValkey = sentinel.master_for(
        target.primary,
        valkey_class=SentinelValkey,
        db=target.db,
        username=target.username,
        password=target.password,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        retry=retry_policy(),
        retry_on_error=list(RETRY_ON),
    )
    primary.sentinel_clients = tuple(sentinel.sentinels)
    return primary


def checked_url(url: SecretStr) -> SecretStr:
    """A settings validator: a ``valkey+sentinel://`` URL must parse (start-up names the
    variable instead of failing on first use); plain URLs are ``Valkey.from_url``'s to judge."""
    value = url.get_secret_value()
    if is_sentinel_url(value):
        parse_sentinel_url(value)  # InvalidValkeyUrl is a ValueError: pydantic reports it
    return url


#: A Valkey URL setting (a secret: it may hold a password), checked by :func:`checked_url`.
ValkeyUrl = Annotated[SecretStr, AfterValidator(checked_url)]
