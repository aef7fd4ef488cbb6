"""Sessions and refresh tokens in Valkey.

Key layout (``<prefix>`` is ``AUTH_VALKEY__KEY_PREFIX``, default ``portico:auth:v1:``)::

    <prefix>session:<sid>                  hash, one per session; TTL: the sliding
                                           AUTH_REFRESH_TOKEN_TTL_S, never past ``ends``
        uid        the user id (UUID string)
        roles      the roles of the session's latest access token, space-separated
        cur        SHA-256 (hex) of the session's current refresh token
        spent      the hashes of the last SPENT_KEPT refresh tokens rotated out, space-separated
        created    when the session started (ms since the epoch)
        refreshed  when its refresh token was last rotated (ms since the epoch)
        ends       its absolute end (ms): ``created`` + AUTH_SESSION_ABSOLUTE_TTL_S
    <prefix>user:<uid>:sessions            set of the sids of one user's sessions (an index for
                                           ending them all and listing them; may name sessions
                                           that expired meanwhile: they are dropped when seen)
    <prefix>throttle:account:<sha256(email)>   login attempts of one account (see throttle.py)
    <prefix>throttle:address:<address>         login attempts from one client address

**Session alive** ⇔ ``EXISTS <prefix>session:<sid>`` is 1. That is the whole check the gateway
and the users service's interceptor do for each request's ``sid`` claim, in O(1). Logout, reuse
detection, an admin and the deletion of the user ``DEL`` the key; an idle session expires with
it (every refresh starts the sliding TTL anew), and no session outlives its ``ends``: the TTL is
never set past it, and a refresh at or after it deletes the session.

**Bounded record**: a session hash holds seven fields whatever the number of refreshes
(``spent`` keeps the last :data:`SPENT_KEPT` hashes, about 1 KiB); the user index holds one sid
per session started within the absolute lifetime and expires with the newest of them.

**Refresh tokens** are ``<sid>.<secret>``, ``secret`` being ``secrets.token_urlsafe(32)`` (256
random bits). Only SHA-256 of the whole token is stored: a fast hash is enough because the
secret is high-entropy (nothing to brute-force, unlike a password), and a leaked Valkey dump
then holds no usable token. The sid in the token names the one key every token operation
touches, so each is a single-key Lua script: atomic, and valid in a Valkey cluster too. The
user index is a different key (another hash slot in a cluster), written outside those scripts:
added to *before* the session is created, so that no session is ever missing from it.

**Rotation and reuse detection** (OAuth 2.0 Security BCP, section 4.14): refreshing with the
current token replaces ``cur`` and remembers the spent hash in ``spent``; presenting one of the
last :data:`SPENT_KEPT` spent tokens again means two parties hold the session's tokens, so the
session is deleted and every access and refresh token of it stops working. A token whose hash
the session does not know (forged, made up around a sid read from a JWT, or spent more than
:data:`SPENT_KEPT` rotations ago) is refused without touching the session.

Sessions written before ``spent``/``ends`` existed (spent hashes as ``old:<hash>`` fields) are
converted at their next rotation: their ``old:*`` fields still count as spent once, then go, and
their absolute lifetime starts then.

Valkey is required here: when it fails, these operations raise ``Unavailable``.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from valkey.asyncio import Valkey
from valkey.exceptions import ValkeyError

from portico_auth.errors import Unavailable
from portico_common.tokens import sessions_ended_channel

_SID = re.compile(r"[0-9a-f]{32}")
VALKEY_FAILURES = (ValkeyError, OSError)

#: Spent refresh-token hashes a session remembers for reuse detection (65 bytes each).
SPENT_KEPT = 16

# KEYS[1] = session; ARGV = uid, roles, hash of the first refresh token, ttl ms, now ms, ends ms.
_CREATE = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'uid', ARGV[1], 'roles', ARGV[2], 'cur', ARGV[3], 'spent', '',
  'created', ARGV[5], 'refreshed', ARGV[5], 'ends', ARGV[6])
local ttl = math.min(tonumber(ARGV[4]), tonumber(ARGV[6]) - tonumber(ARGV[5]))
redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
return 1
"""
# The shared start of the scripts that take a refresh token (KEYS[1] = session, ARGV[1] = the
# presented hash): the session's fields, and whether the presented token is a spent one (in
# ``spent``, or an ``old:<hash>`` field of a session written before ``spent`` existed).
_SPENT_CHECK = """
local s = redis.call('HMGET', KEYS[1], 'cur', 'uid', 'ends', 'spent')
if not s[1] then return {0} end
local legacy = not s[3]
local spent = s[4] or ''
local function is_spent(h)
  if string.find(' ' .. spent, ' ' .. h .. ' ', 1, true) then return true end
  return legacy and redis.call('HEXISTS', KEYS[1], 'old:' .. h) == 1
end
"""
# Every script that deletes a session PUBLISHes its id (the sessions-ended channel,
# portico_common.tokens.sessions_ended_channel) in the same atomic step, so verifiers that keep
# "alive" answers in memory drop them at once.
# ARGV = presented hash, new hash, ttl ms, channel, sid, now ms, ends ms for a legacy session,
# roles, SPENT_KEPT.
# {0} no session; {1, uid} rotated; {2, uid} reuse, session deleted; {3} unknown token;
# {4, uid} past its absolute end, session deleted.
_ROTATE = (
    _SPENT_CHECK
    + """
local now = tonumber(ARGV[6])
local ends_text = s[3] or ARGV[7]
local ends = tonumber(ends_text)
if now >= ends then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[4], ARGV[5])
  return {4, s[2]}
end
if s[1] == ARGV[1] then
  local kept = ' ' .. ARGV[1] .. ' ' .. spent
  kept = string.sub(kept, 2, 1 + 65 * tonumber(ARGV[9]))
  if legacy then
    for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
      if string.sub(field, 1, 4) == 'old:' then redis.call('HDEL', KEYS[1], field) end
    end
  end
  redis.call('HSET', KEYS[1], 'cur', ARGV[2], 'spent', kept, 'refreshed', ARGV[6],
    'ends', ends_text, 'roles', ARGV[8])
  redis.call('PEXPIRE', KEYS[1], string.format('%d', math.min(tonumber(ARGV[3]), ends - now)))
  return {1, s[2]}
end
if is_spent(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[4], ARGV[5])
  return {2, s[2]}
end
return {3}
"""
)
# ARGV = presented hash, channel, sid. {0} no session; {1, uid} deleted; {3} unknown token.
_END = (
    _SPENT_CHECK
    + """
if s[1] == ARGV[1] or is_spent(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return {1, s[2]}
end
return {3}
"""
)
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
    ENDED = "ended"  # past its absolute lifetime: the session is now deleted


@dataclass(frozen=True, slots=True)
class RotationResult:
    outcome: Rotation
    user_id: str = ""  # also set for REUSED and ENDED: the user whose session was deleted
    refresh_token: str = ""


@dataclass(frozen=True, slots=True)
class EndResult:
    """What ending a session with a refresh token did."""

    #: The session is gone now (also when it already was); False: not one of its tokens.
    ended: bool
    #: The session's user when this call deleted it; "" otherwise.
    user_id: str = ""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What an admin sees of a session: never a token or a hash."""

    session_id: str
    #: Milliseconds since the epoch; 0 when unknown (a session older than these fields).
    created_ms: int
    refreshed_ms: int
    #: When it expires if not refreshed (the sliding TTL, capped by ``ends_ms``).
    idle_expires_ms: int
    #: Its absolute end.
    ends_ms: int


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


def _ms(value: Any) -> int:
    return int(_text(value)) if value is not None else 0


class Sessions:
    """The session operations: each token operation one atomic Lua script on one key."""

    def __init__(
        self,
        client: Valkey,
        *,
        key_prefix: str,
        ttl_s: int,
        absolute_ttl_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._prefix = key_prefix
        self._ttl_ms = ttl_s * 1000
        self._absolute_ms = absolute_ttl_s * 1000
        self._clock = clock
        self._create = client.register_script(_CREATE)
        self._rotate = client.register_script(_ROTATE)
        self._end = client.register_script(_END)
        self._delete = client.register_script(_DELETE)
        self._channel = sessions_ended_channel(key_prefix)

    def key(self, session_id: str) -> str:
        """The Valkey key whose existence means the session is alive."""
        return f"{self._prefix}session:{session_id}"

    def index_key(self, user_id: str) -> str:
        """The set of the sids of ``user_id``'s sessions."""
        return f"{self._prefix}user:{user_id}:sessions"

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def create(self, *, user_id: str, roles: Sequence[str]) -> tuple[str, str]:
        """Start a session; returns ``(sid, refresh token)``."""
        sid = new_session_id()
        token = new_refresh_token(sid)
        now = self._now_ms()
        args: list[str | int] = [
            user_id,
            " ".join(roles),
            token_hash(token),
            self._ttl_ms,
            now,
            now + self._absolute_ms,
        ]
        index = self.index_key(user_id)
        try:
            # Indexed first: a session that exists is always in its user's index. The index
            # lives as long as the newest session can.
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.sadd(index, sid)
                pipe.pexpire(index, self._absolute_ms)
                await pipe.execute()
            await self._create(keys=[self.key(sid)], args=args)
        except VALKEY_FAILURES as exc:
            raise Unavailable() from exc
        return sid, token

    async def current_owner(self, refresh_token: str) -> str | None:
        """The user of the session whose *current* refresh token this is; None otherwise.

        A read that spends nothing: it lets the caller check the user before :meth:`rotate`.
        A token that is not the current one can never become it (each new one is random), so
        None here means :meth:`rotate` will not rotate it either.
        """
        sid = session_of(refresh_token)
        if sid is None:
            return None
        try:
            cur, uid = await self._client.hmget(self.key(sid), ["cur", "uid"])  # type: ignore[misc]
        except VALKEY_FAILURES as exc:
            raise Unavailable() from exc
        if cur is None or uid is None or _text(cur) != token_hash(refresh_token):
            return None
        return _text(uid)

    async def rotate(self, refresh_token: str, *, roles: Sequence[str]) -> RotationResult:
        """Spend ``refresh_token`` for a new one of the same session, whose access tokens now
        carry ``roles`` (see the module doc)."""
        sid = session_of(refresh_token)
        if sid is None:
            return RotationResult(Rotation.UNKNOWN)
        new_token = new_refresh_token(sid)
        now = self._now_ms()
        args: list[str | int] = [
            token_hash(refresh_token),
            token_hash(new_token),
            self._ttl_ms,
            self._channel,
            sid,
            now,
            now + self._absolute_ms,
            " ".join(roles),
            SPENT_KEPT,
        ]
        try:
            reply = await self._rotate(keys=[self.key(sid)], args=args)
        except VALKEY_FAILURES as exc:
            raise Unavailable() from exc
        code = int(reply[0])
        user_id = _text(reply[1]) if len(reply) > 1 else ""
        if code == 1:
            return RotationResult(Rotation.ROTATED, user_id, new_token)
        if code == 2:
            return RotationResult(Rotation.REUSED, user_id)
        if code == 4:
            return RotationResult(Rotation.ENDED, user_id)
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

    async def end_all(self, user_id: str) -> list[str]:
        """Delete every session of ``user_id``; the sids this call deleted (idempotent)."""
        index = self.index_key(user_id)
        try:
            members = await self._client.smembers(index)  # type: ignore[misc]
            sids = sorted(_text(sid) for sid in members)
            ended = [sid for sid in sids if await self.end(sid)]
            if sids:
                await self._client.srem(index, *sids)  # type: ignore[misc]
        except VALKEY_FAILURES as exc:
            raise Unavailable() from exc
        return ended

    async def of_user(self, user_id: str) -> list[SessionInfo]:
        """The live sessions of ``user_id``, oldest first; drops expired ones from the index."""
        index = self.index_key(user_id)
        try:
            members = await self._client.smembers(index)  # type: ignore[misc]
            sids = sorted(_text(sid) for sid in members)
            async with self._client.pipeline(transaction=False) as pipe:
                for sid in sids:
                    pipe.hmget(self.key(sid), ["uid", "created", "refreshed", "ends"])
                    pipe.pttl(self.key(sid))
                replies = await pipe.execute()
            now = self._now_ms()
            found: list[SessionInfo] = []
            gone: list[str] = []
            for i, sid in enumerate(sids):
                (uid, created, refreshed, ends), ttl = replies[2 * i], int(replies[2 * i + 1])
                if uid is None or _text(uid) != user_id or ttl < 0:
                    gone.append(sid)
                    continue
                found.append(SessionInfo(sid, _ms(created), _ms(refreshed), now + ttl, _ms(ends)))
            if gone:
                await self._client.srem(index, *gone)  # type: ignore[misc]
        except VALKEY_FAILURES as exc:
            raise Unavailable() from exc
        return sorted(found, key=lambda s: (s.created_ms, s.session_id))

    async def alive(self, session_id: str) -> bool:
        """``EXISTS <prefix>session:<sid>``: the O(1) check every verifier does."""
        try:
            return bool(await self._client.exists(self.key(session_id)))
        except VALKEY_FAILURES as exc:
            raise Unavailable() from exc
