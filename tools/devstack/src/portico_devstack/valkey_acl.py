"""Valkey ACL users, one per component: which keys, channels and commands each may use.

The one place the rules are written down. ``make run`` and the tests load them into the embedded
Valkey as an ACL file (:func:`acl_file`), and ``k8s/base/valkey/statefulset.yaml`` passes the
same rules as ``--user`` arguments (``tests/k8s/test_data_stores.py`` compares them). Commands
are listed one by one, never by category: a category such as ``@write`` holds key-less commands
(``FLUSHALL``) that no key pattern restrains. Commands a Lua script calls are checked against
the caller's user too, so each user lists what its scripts call. See docs/data-stores.md.

Keys (the services' default prefixes):

* ``portico:gateway:v1:*``: the gateway's rate limits and idempotency records;
* ``portico:users:v1:*``: the users service's read cache; the gateway may only read its user
  entries (``HMGET portico:users:v1:user:*``, in a read-only selector: the edge path of
  ``portico.edge.v1.cacheable`` reads), never write or delete one;
* ``portico:auth:v1:*``: the auth service's sessions and login throttles; every token verifier
  (gateway, users, audit, auth) may only ask ``EXISTS portico:auth:v1:session:*`` and subscribe
  to ``portico:auth:v1:sessions-ended``;
* ``portico:events:v1``: the event stream. Users and auth append (the outbox relays); audit
  reads it through its consumer group and appends to ``portico:events:v1:dead``. The auth
  service also reads it through a consumer group of its own (``deletions.py``: a deleted user's
  sessions end), so it holds the consumer-group commands as well.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The components that connect to Valkey, each as its own user.
COMPONENTS = ("gateway", "users", "auth", "audit")
#: The launcher's and the tests' user: every key and command (never given to a component).
ADMIN = "admin"

SESSIONS = "portico:auth:v1:session:*"
SESSIONS_ENDED = "portico:auth:v1:sessions-ended"
EVENTS = "portico:events:v1"
DEAD_LETTERS = "portico:events:v1:dead"

_CONNECTION = ("+ping", "+hello", "+auth", "+client|setinfo", "+client|setname", "+select")
_SCRIPTS = ("+evalsha", "+script|load")
#: A token verifier: is the session alive (``EXISTS`` only, read-only, in a selector of its own:
#: nothing else of a session can be read or written), and hear when one ends.
_VERIFY = (f"&{SESSIONS_ENDED}", "+subscribe", "+unsubscribe", f"(%R~{SESSIONS} +exists)")
#: The gateway's edge path: read the users cache's user entries, nothing else of that cache.
USERS_CACHE_ENTRIES = "portico:users:v1:user:*"
_EDGE_READ = f"(%R~{USERS_CACHE_ENTRIES} +hmget)"
_CONSUME = "+xreadgroup +xack +xgroup|create +xpending +xclaim +xautoclaim +xinfo|groups +xrange"


@dataclass(frozen=True, slots=True)
class AclUser:
    name: str
    #: ACL rules after ``on`` and the password: key patterns, channels, commands, selectors.
    rules: tuple[str, ...]


USERS: dict[str, AclUser] = {
    "gateway": AclUser(
        "gateway",
        (
            "resetchannels",
            "~portico:gateway:v1:*",
            *_VERIFY,
            _EDGE_READ,
            *_CONNECTION,
            *_SCRIPTS,
            # rate_limit.py and idempotency.py's scripts
            "+exists",
            "+get",
            "+set",
            "+time",
            "+hget",
            "+hmget",
            "+hset",
            "+hdel",
            "+del",
            "+pexpire",
        ),
    ),
    "users": AclUser(
        "users",
        (
            "resetchannels",
            "~portico:users:v1:*",
            *_VERIFY,
            *_CONNECTION,
            *_SCRIPTS,
            # cache.py (and its scripts)
            "+hget",
            "+hset",
            "+del",
            "+pexpire",
            f"(~{EVENTS} +xadd)",  # the outbox relay
            "+wait",  # … which waits for a replica to have its batch (docs/valkey-ha.md)
        ),
    ),
    "auth": AclUser(
        "auth",
        (
            "resetchannels",
            "~portico:auth:v1:*",
            *_VERIFY,
            "+publish",  # sessions.py's scripts announce every ended session
            *_CONNECTION,
            *_SCRIPTS,
            # sessions.py (sessions, the per-user index) and throttle.py (and their scripts)
            "+exists",
            "+hget",
            "+hmget",
            "+hkeys",
            "+hexists",
            "+hset",
            "+hdel",
            "+sadd",
            "+smembers",
            "+srem",
            "+del",
            "+pexpire",
            "+pttl",
            "+incr",
            # the outbox relay; deletions.py's consumer group (user.deleted ends the sessions)
            f"(~{EVENTS} +xadd {_CONSUME})",
            "+wait",  # the outbox relay waits for a replica to have its batch
        ),
    ),
    "audit": AclUser(
        "audit",
        (
            "resetchannels",
            *_VERIFY,
            *_CONNECTION,
            f"(~{EVENTS} {_CONSUME})",  # consumer.py
            f"(~{DEAD_LETTERS} +xadd)",
        ),
    ),
}


#: The metrics exporter beside Valkey in Kubernetes (redis_exporter): server statistics, no keys.
EXPORTER_RULES = (
    "+ping",
    "+hello",
    "+auth",
    "+select",
    "+client|setname",
    "+client|setinfo",
    "+info",
    "+config|get",
    "+dbsize",
    "+client|list",
    "+slowlog|get",
    "+slowlog|len",
    "+latency|latest",
    "+latency|histogram",
)


#: Valkey high availability (k8s/components/valkey-ha, docs/valkey-ha.md): the users the data
#: nodes grant to each other, never to a component. ``replica``: what a replica sends to its
#: primary (Valkey's replication docs). ``sentinel``: what a Sentinel sends to the nodes it
#: monitors and fails over (the Sentinel docs, "ACL"), its hello channel only (instead of
#: ``allchannels``); ``FAILOVER`` is not among them: Sentinel promotes with ``REPLICAOF NO ONE``
#: (``SLAVEOF``). The failover drill (tests/reliability/sentinel.py) runs replication and
#: Sentinel as these users and fails if a node's ACL LOG records a denial for either.
REPLICA = "replica"
SENTINEL = "sentinel"
HA_RULES: dict[str, tuple[str, ...]] = {
    REPLICA: ("resetchannels", "-@all", "+psync", "+replconf", "+ping"),
    SENTINEL: (
        "resetchannels",
        "&__sentinel__:hello",
        "-@all",
        "+multi",
        "+exec",
        "+slaveof",
        "+ping",
        "+subscribe",
        "+publish",
        "+config|rewrite",
        "+role",
        "+info",
        "+client|setname",
        "+client|kill",
        "+script|kill",
    ),
}


def new_passwords() -> dict[str, str]:
    """A random password per component and for the admin (hex: safe in a URL as it is)."""
    return {name: secrets.token_hex(24) for name in (*COMPONENTS, ADMIN)}


def acl_file(passwords: Mapping[str, str], *, ha: bool = False) -> str:
    """An ACL file (``aclfile``) for a local Valkey: the components, the admin, and ``default``;
    with ``ha``, also the replication and Sentinel users (:data:`HA_RULES`), whose passwords
    ``passwords`` must then hold too.

    Passwords are stored as SHA-256 (``#<hex>``), never in clear. ``default`` (no password) may
    only ``PING``, so a readiness probe works and nothing else does without a user.
    """

    def digest(name: str) -> str:
        return "#" + hashlib.sha256(passwords[name].encode()).hexdigest()

    lines = [
        "user default on nopass resetchannels -@all +ping",
        f"user {ADMIN} on {digest(ADMIN)} ~* &* +@all",
    ]
    lines += [f"user {u.name} on {digest(u.name)} {' '.join(u.rules)}" for u in USERS.values()]
    if ha:
        lines += [f"user {name} on {digest(name)} {' '.join(r)}" for name, r in HA_RULES.items()]
    return "\n".join(lines) + "\n"


def user_url(url: str, user: str, password: str) -> str:
    """``url`` (``redis://host:port/db``) as ``user``."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{user}:{password}@{rest.rpartition('@')[2]}"


async def apply(client: Any, passwords: Mapping[str, str]) -> None:
    """Create (or reset) the component users on a running Valkey, through an admin ``client``.

    For a server the launcher or the tests did not start (``VALKEY_URL``, ``TEST_VALKEY_URL``);
    an embedded one loads :func:`acl_file` at start instead, and keeps it across restarts.
    """
    for user in USERS.values():
        await client.execute_command(
            "ACL", "SETUSER", user.name, "reset", "on", f">{passwords[user.name]}", *user.rules
        )
