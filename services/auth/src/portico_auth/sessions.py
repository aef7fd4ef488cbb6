"""Sessions and refresh tokens in Valkey.

Key layout (``<prefix>`` is ``AUTH_VALKEY__KEY_PREFIX``, default ``portico:auth:v1:``)::

    <prefix>session:<sid>                  hash, one per session, TTL AUTH_REFRESH_TOKEN_TTL_S
        uid          the user id (UUID string)
        roles        the roles of the session's access tokens, space-separated
        cur          SHA-256 (hex) of the session's current refresh token
        old:<hash>   "1" for every refresh token already rotated out of this session
    <prefix>throttle:account:<sha256(email)>   login attempts of one account (see throttle.py)
    <prefix>throttle:address:<address>         login attempts from one client address

**Session alive** ⇔ ``EXISTS <prefix>session:<sid>`` is 1. That is the whole check the gateway
and the users service's interceptor do for each request's ``sid`` claim, in O(1). Logout and
reuse detection ``DEL`` the key; an idle session expires with it (every refresh resets the TTL).

**Refresh tokens** are ``<sid>.<secret>``, ``secret`` being ``secrets.token_urlsafe(32)`` (256
random bits). Only SHA-256 of the whole token is stored: a fast hash is enough because the
secret is high-entropy (nothing to brute-force, unlike a password), and a leaked Valkey dump
then holds no usable token. The sid in the token names the one key every operation touches, so
each operation is a single-key Lua script: atomic, and valid in a Valkey cluster too.

**Rotation and reuse detection** (OAuth 2.0 Security BCP, section 4.14): refreshing with the
current token replaces ``cur`` and remembers the spent hash as ``old:<hash>``; presenting a
spent token again means two parties hold the session's tokens, so the session is deleted and
every access and refresh token of it stops working. A token whose hash the session does not
know (forged, or made up around a sid read from a JWT) is refused without touching the session.

Valkey is required here: when it fails, these operations raise ``Unavailable``.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from valkey.asyncio import Valkey
from valkey.exceptions import ValkeyError

from portico_auth.errors import Unavailable
from portico_common.tokens import sessions_ended_channel

_SID = re.compile(r"[0-9a-f]{32}")
VALKEY_FAILURES = (ValkeyError, OSError)

# KEYS[1] = session; ARGV = uid, roles, hash of the first refresh token, ttl ms.
_CREATE = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'uid', ARGV[1], 'roles', ARGV[2], 'cur', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""
# Every script that deletes a session PUBLISHes its id on ARGV[n] (the sessions-ended channel,
# portico_common.tokens.sessions_ended_channel) in the same atomic step, so verifiers that keep
# "alive" answers in memory drop them at once.
# KEYS[1] = session; ARGV = presented hash, new hash, ttl ms, channel, sid.
# {0} no session; {1, uid, roles} rotated; {2, uid} reuse, session deleted; {3} unknown token.
_ROTATE = """
local cur = redis.call('HGET', KEYS[1], 'cur')
if not cur then return {0} end
if cur == ARGV[1] then
  redis.call('HSET', KEYS[1], 'cur', ARGV[2], 'old:' .. ARGV[1], '1')
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, redis.call('HGET', KEYS[1], 'uid'), redis.call('HGET', KEYS[1], 'roles')}
end
if redis.call('HEXISTS', KEYS[1], 'old:' .. ARGV[1]) == 1 then
  local uid = redis.call('HGET', KEYS[1], 'uid')
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[4], ARGV[5])
  return {2, uid}
end
return {3}
"""
# KEYS[1] = session; ARGV = presented hash, channel, sid.
# {0} no session; {1, uid} deleted; {3} unknown token.
_END = """
local cur = redis.call('HGET', KEYS[1], 'cur')
if not cur then return {0} end
if cur == ARGV[1] or redis.call('HEXISTS', KEYS[1], 'old:' .. ARGV[1]) == 1 then
  local uid = redis.call('HGET', KEYS[1], 'uid')
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return {1, uid}
end
return {3}
"""
# KEYS[1] = session; ARGV = channel, sid. The number of keys deleted (0 or 1).
_DELETE = """
local deleted = redis.call('DEL', KEYS[1])
if deleted == 1 then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return deleted
"""


class Rotation(enum.Enum):
    """What presenting a refresh token did."""

    ROTATED = "rotated"
    NO_SESSION = "no session"  # expired, logged out or revoked
    REUSED = "reused"  # a spent token: the session is now revoked
    UNKNOWN = "unknown"  # not a token of this session


@dataclass(frozen=True, slots=True)
class RotationResult:
    outcome: Rotation
    user_id: str = ""  # also set for REUSED: the user whose session was revoked
    roles: tuple[str, ...] = ()
    refresh_token: str = ""


@dataclass(frozen=True, slots=True)
class EndResult:
    """What ending a session with a refresh token did."""

    #: The session is gone now (also when it already was); False: not one of its tokens.
    ended: bool
    #: The session's user when this call deleted it; "" otherwise.
    user_id: str = ""


def token_hash(token: str) -> str:
    """SHA-256 (hex) of a refresh token, the only form in which it is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_session_id() -> str:
    """A fresh session id: 128 random bits as 32 hex characters."""
    return secrets.token_hex(16)


def new_refresh_token(session_id: str) -> str:
    """``<sid>.<256 random bits, base64url>``."""
    return f"{session_id}.{secrets.token_urlsafe(32)}"


def session_of(refresh_token: str) -> str | None:
    """The sid a refresh token names, or None when it is not shaped like one of ours."""
    sid, dot, secret = refresh_token.partition(".")
    return sid if dot and _SID.fullmatch(sid) and len(secret) >= 43 else None


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class Sessions:
    """The session operations, each one atomic Lua script on one key."""

    def __init__(self, client: Valkey, *, key_prefix: str, ttl_s: int) -> None:
        self._client = client
        self._prefix = key_prefix
        self._ttl_ms = ttl_s * 1000
        self._create = client.register_script(_CREATE)
        self._rotate = client.register_script(_ROTATE)
        self._end = client.register_script(_END)
        self._delete = client.register_script(_DELETE)
        self._channel = sessions_ended_channel(key_prefix)

    def key(self, session_id: str) -> str:
        """The Valkey key whose existence means the session is alive."""
        return f"{self._prefix}session:{session_id}"

    async def create(self, *, user_id: str, roles: Sequence[str]) -> tuple[str, str]:
        """Start a session; returns ``(sid, refresh token)``."""
        sid = new_session_id()
        token = new_refresh_token(sid)
        args: list[str | int] = [user_id, " ".join(roles), token_hash(token), self._ttl_ms]
        try:
            await self._create(keys=[self.key(sid)], args=args)
        except VALKEY_FAILURES as exc:
            raise Unavailable() from exc
        return sid, token

    async def rotate(self, refresh_token: str) -> RotationResult:
        """Spend ``refresh_token`` for a new one of the same session (see the module doc)."""
        sid = session_of(refresh_token)
        if sid is None:
            return RotationResult(Rotation.UNKNOWN)
        new_token = new_refresh_token(sid)
        args: list[str | int] = [
            token_hash(refresh_token),
            token_hash(new_token),
            self._ttl_ms,
            self._channel,
            sid,
        ]
        try:
            reply = await self._rotate(keys=[self.key(sid)], args=args)
        except VALKEY_FAILURES as exc:
            raise Unavailable() from exc
        code = int(reply[0])
        if code == 1:
            roles = tuple(_text(reply[2]).split())
            return RotationResult(Rotation.ROTATED, _text(reply[1]), roles, new_token)
        if code == 2:
            return RotationResult(Rotation.REUSED, _text(reply[1]) if len(reply) > 1 else "")
        return RotationResult(Rotation.NO_SESSION if code == 0 else Rotation.UNKNOWN)

    async def end_with_refresh_token(self, refresh_token: str) -> EndResult:
        """Delete the session of a (current or spent) refresh token (see :class:`EndResult`)."""
        sid = session_of(refresh_token)
        if sid is None:
            return EndResult(ended=False)
        try:
            reply = await self._end(
                keys=[self.key(sid)], args=[token_hash(refresh_token), self._channel, sid]
            )
        except VALKEY_FAILURES as exc:
            raise Unavailable() from exc
        code = int(reply[0])
        if code == 1 and len(reply) > 1:
            return EndResult(ended=True, user_id=_text(reply[1]))
        return EndResult(ended=code != 3)

    async def end(self, session_id: str) -> bool:
        """Delete a session (its access and refresh tokens stop working); False: none was."""
        try:
            deleted = await self._delete(
                keys=[self.key(session_id)], args=[self._channel, session_id]
            )
            return bool(deleted)
        except VALKEY_FAILURES as exc:
            raise Unavailable() from exc

    async def alive(self, session_id: str) -> bool:
        """``EXISTS <prefix>session:<sid>``: the O(1) check every verifier does."""
        try:
            return bool(await self._client.exists(self.key(session_id)))
        except VALKEY_FAILURES as exc:
            raise Unavailable() from exc
