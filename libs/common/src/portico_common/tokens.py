"""Verify Portico access tokens locally: the JWKS is cached, the session is one ``EXISTS``.

An access token (issued by the auth service, see ``proto/portico/auth/v1/auth.proto``) is a JWT
signed with EdDSA (Ed25519) whose header names its key by ``kid``. :class:`TokenVerifier`
accepts it when, in this order:

1. it is three base64url parts whose header says ``alg: EdDSA`` and has a ``kid`` — anything else
   (``alg: none``, HS256 "signed" with the public key, RSA …) is refused before any key is used;
2. the ``kid`` is in the JWKS (:class:`JwksCache`; an unknown ``kid`` triggers at most one
   refetch per ``min_refresh_s``, so a key rotated in is picked up and garbage cannot hammer the
   auth service);
3. PyJWT verifies the signature and ``iss``, ``aud``, ``exp``, ``iat``, ``nbf`` (with a small
   leeway) and every claim Portico relies on is present and well-typed;
4. the session is alive: ``EXISTS <prefix>session:<sid>`` in Valkey (O(1)); logout and
   refresh-token reuse delete that key, so the token stops working at once.

Steps 1-3 are pure functions of the token and the key, so their result is remembered per token
(up to ``cache_size`` tokens, oldest forgotten first) until the token expires: a client sends
the same token for many requests, and the Ed25519 check is most of the local cost (measured by
``bench/token_verification.py``). A remembered token is still refused once it expires, once its
key leaves the JWKS, and — step 4 runs on every call — once its session ends.

When the session store cannot be asked (Valkey down or timing out), :class:`SessionStorePolicy`
decides. ``closed`` lets the store's error through (callers answer 503 / UNAVAILABLE).
``degraded`` (the default) keeps reads working, as the cache does for data:

* a session this process saw *end* (``EXISTS`` said 0) stays refused;
* a read-only call (``read_only=True``: HTTP GET/HEAD, RPCs bound to ``get``) is accepted on
  steps 1-3 alone;
* a call that changes state is accepted only if this process saw the session alive within
  ``write_grace_s`` (default 60 s); otherwise the store's error goes through.

The exposure is bounded: no token can be issued while the store is down (the auth service
creates the session there first), and access tokens live at most 15 minutes, so what a revoked
token can still do during an outage is read, for what is left of its lifetime, unless this
process saw the revocation. SECURITY.md ("Revocable sessions") states the trade-off.

Errors are :class:`InvalidToken` with a short, client-safe ``reason`` (any malformed token,
however it is malformed: too long, nested too deeply to parse …), or a :class:`CheckUnavailable`:
:class:`SessionStoreUnavailable` when the session store could not be asked,
:class:`KeysUnavailable` when a key the token names could not be looked up; details stay in logs.
No per-request call reaches the auth service.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from portico_common.config import SessionStoreSettings, get_session_store_settings

_log = logging.getLogger(__name__)

ALGORITHM = "EdDSA"
#: Longer tokens are malformed without being parsed: Portico's are about 400 characters, and a
#: JSON header or payload nested thousands deep (which makes the parser raise RecursionError)
#: needs thousands of characters.
MAX_TOKEN_CHARS = 4096
REQUIRED_CLAIMS = ("sub", "sid", "roles", "iss", "aud", "exp", "iat", "jti")

Jwk = Mapping[str, str]
FetchJwks = Callable[[], Awaitable[Sequence[Jwk]]]


class InvalidToken(Exception):  # noqa: N818 (reads as the condition; maps to UNAUTHENTICATED)
    """The token cannot be accepted; ``reason`` is safe to show to the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CheckUnavailable(Exception):  # noqa: N818 (maps to UNAVAILABLE / 503)
    """The token could not be checked now (not: it is bad); ``detail`` is safe to show."""

    detail = "cannot check the access token; retry later"


class SessionStoreUnavailable(CheckUnavailable):
    """The session store could not be asked, and the policy does not accept the token without
    it; the store's own error is the ``__cause__``."""

    detail = "cannot check the session; retry later"


class KeysUnavailable(CheckUnavailable):
    """The token names a key this process does not hold, and the auth service's key set could
    not be fetched to look for it: a new key or a forged id cannot be told apart, so the call is
    refused as retryable (503 / UNAVAILABLE), never as a bad token (401), which would make
    clients drop a valid one during an auth outage."""

    detail = "cannot fetch the token signing keys; retry later"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, from a verified access token."""

    user_id: str
    session_id: str
    roles: frozenset[str]
    token_id: str
    expires_at: int

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


@dataclass(frozen=True, slots=True)
class SessionStorePolicy:
    """What :meth:`TokenVerifier.verify` does when the session store fails (module docstring)."""

    fail_mode: Literal["degraded", "closed"] = "degraded"
    write_grace_s: float = 60.0
    #: Sessions remembered as seen alive / seen ended (each map, oldest forgotten first).
    memory: int = 10_000

    @classmethod
    def from_settings(cls, settings: SessionStoreSettings) -> SessionStorePolicy:
        return cls(fail_mode=settings.fail_mode, write_grace_s=settings.write_grace_s)


class SessionCheck(Protocol):
    async def alive(self, session_id: str) -> bool: ...


_PUBSUB_POLL_S = 1.0
_SILENCE_S = 3.0


def sessions_ended_channel(key_prefix: str) -> str:
    """The Valkey pub/sub channel on which the auth service announces every session it ends."""
    return f"{key_prefix}sessions-ended"


class ValkeySessions:
    """Session liveness as the auth service keeps it: ``EXISTS <prefix>session:<sid>``.

    With ``cache_s`` > 0 an ``EXISTS`` that said "alive" is remembered for ``cache_s`` seconds,
    but only while this object listens to :func:`sessions_ended_channel`, on which the auth
    service publishes each session it ends (logout, refresh-token reuse, its own identity), in
    the same Lua script as the ``DEL``. A message drops the session from memory and marks it
    ended for good (session ids are never reused), so a revocation takes effect as soon as the
    message arrives: milliseconds, not ``cache_s``. Whenever the subscription is not confirmed
    (starting, Valkey restarting, the connection lost) nothing is remembered and every call
    asks Valkey, and an answer that was on its way across a reconnection is not remembered
    either (``_epoch``). The listener PINGs a quiet connection every second and gives it up after
    3 s without an answer, so even a connection that dies silently (no FIN) stops the
    remembering within seconds; ``cache_s`` bounds what is left: a revocation whose message was
    lost in that window, or a session key deleted by hand or expired without a message.
    :meth:`start` runs the listener; :meth:`aclose` ends it (or ``async with``).
    """

    def __init__(
        self,
        client: Any,
        *,
        key_prefix: str = "portico:auth:v1:",
        cache_s: float = 0.0,
        memory: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._prefix = key_prefix
        self._cache_s = cache_s
        self._memory = memory
        self._clock = clock
        self._alive_until: dict[str, float] = {}
        self._ended: dict[str, None] = {}  # announced ended (an ordered, bounded set)
        self._listening = False
        self._epoch = 0  # bumped on every (un)subscription: answers from before are not kept
        self._listener: asyncio.Task[None] | None = None
        self._closing = False

    async def __aenter__(self) -> ValkeySessions:
        self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    def start(self) -> None:
        """Listen for ended sessions in the background (only when ``cache_s`` > 0)."""
        if self._cache_s > 0 and self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name="session-ended-listener"
            )

    async def aclose(self) -> None:
        self._closing = True
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            # The client's connect may absorb a cancellation; the loop then sees _closing.
            await asyncio.wait({listener}, timeout=_PUBSUB_POLL_S + 1.0)
            self._forget_all()

    @property
    def listening(self) -> bool:
        return self._listening

    async def alive(self, session_id: str) -> bool:
        if session_id in self._ended:
            return False
        if self._listening:
            until = self._alive_until.get(session_id)
            if until is not None and until > self._clock():
                return True
        epoch = self._epoch
        alive = bool(await self._client.exists(f"{self._prefix}session:{session_id}"))
        if alive and self._listening and epoch == self._epoch and session_id not in self._ended:
            _remember(self._alive_until, session_id, self._clock() + self._cache_s, self._memory)
        return alive

    def _forget_all(self) -> None:
        self._listening = False
        self._epoch += 1
        self._alive_until.clear()

    async def _listen(self) -> None:
        backoff = 0.1
        while not self._closing:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(sessions_ended_channel(self._prefix))
                heard = self._clock()
                while not self._closing:
                    # Short reads (the client's socket timeout would end a blocking one) and a
                    # PING after a quiet second: a connection that stops answering for
                    # _SILENCE_S is treated as lost, so a dead one is noticed within seconds.
                    message = await pubsub.get_message(timeout=_PUBSUB_POLL_S)
                    now = self._clock()
                    if message is None:
                        if now - heard > _SILENCE_S:
                            raise ConnectionError(f"no answer to PING in {_SILENCE_S:g} s")
                        if now - heard > _PUBSUB_POLL_S:
                            await pubsub.ping()
                        continue
                    heard = now
                    kind = message.get("type")
                    if kind in ("subscribe", b"subscribe"):
                        self._epoch += 1
                        self._listening = True
                        backoff = 0.1
                    elif kind in ("message", b"message"):
                        data = message.get("data")
                        sid = data.decode() if isinstance(data, bytes) else str(data)
                        self._alive_until.pop(sid, None)
                        _remember(self._ended, sid, None, self._memory)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection's errors: refused, reset, timeout …
                if self._listening:
                    _log.warning("session listener lost its subscription: %s", exc)
            finally:
                self._forget_all()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            if not self._closing:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)


def public_key_of(jwk: Jwk) -> Ed25519PublicKey | None:
    """The Ed25519 key of an OKP JWK (RFC 8037); None for any other kind of key."""
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not jwk.get("x"):
        return None
    raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        return None


class JwksCache:
    """Verification keys by ``kid``, fetched from the auth service and refreshed sparingly.

    One fetch at a time, shared by every caller that needs it. After a fetch that worked, the
    next is due when the keys are ``max_age_s`` old, or for a ``kid`` not held at most every
    ``min_refresh_s`` (forged ids cannot make a fetch per request). After a failed fetch the next
    is due after a backoff from ``FAILED_RETRY_S``, doubling up to ``min_refresh_s``: a service
    that started before the auth service answers soon after, and one whose auth service is down
    does not ask it per request.
    """

    FAILED_RETRY_S = 0.25

    def __init__(
        self,
        fetch: FetchJwks,
        *,
        max_age_s: float = 300.0,
        min_refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._max_age_s = max_age_s
        self._min_refresh_s = min_refresh_s
        self._clock = clock
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._fetched_at: float | None = None  # the last fetch that worked
        self._tried_at: float | None = None  # the last fetch, whatever came of it
        self._failures = 0  # failed fetches since the last that worked
        self._fetching: asyncio.Task[None] | None = None

    async def key(self, kid: str) -> Ed25519PublicKey | None:
        """The key named ``kid``; refetches when stale, or once in a while for unknown kids.

        None only when the last fetch worked and did not hold ``kid``: there is no such key.
        :class:`KeysUnavailable` when ``kid`` is not held and the last fetch failed (or none
        has been made): a new key and a forged id cannot be told apart until one works.
        """
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at >= self._max_age_s
        if stale or kid not in self._keys:
            if self._fetching is None and self._due(now):
                self._tried_at = now
                self._fetching = asyncio.create_task(self._refresh())
            if self._fetching is not None:
                # Shielded: a caller that gives up does not cancel the fetch the others await.
                await asyncio.shield(self._fetching)
        key = self._keys.get(kid)
        if key is None and (self._failures or self._fetched_at is None):
            raise KeysUnavailable(f"no key {kid!r} held and the key set could not be fetched")
        return key

    def _due(self, now: float) -> bool:
        if self._tried_at is None:
            return True
        wait = self._min_refresh_s
        if self._failures:
            wait = min(wait, self.FAILED_RETRY_S * 2 ** (self._failures - 1))
        return now - self._tried_at >= wait

    async def _refresh(self) -> None:
        try:
            jwks = await self._fetch()
        except Exception as exc:  # keep serving with the keys we have
            self._failures += 1
            _log.warning("JWKS refresh failed (%s); keeping %d key(s)", exc, len(self._keys))
        else:
            self._keys = {j["kid"]: k for j in jwks if j.get("kid") and (k := public_key_of(j))}
            self._fetched_at = self._clock()
            self._failures = 0
        finally:
            self._fetching = None


def _remember(memory: dict[str, Any], key: str, value: Any, limit: int) -> None:
    """``memory[key] = value``, forgetting the oldest key when ``memory`` is full."""
    if key not in memory and len(memory) >= limit > 0:
        del memory[next(iter(memory))]
    memory[key] = value


def _segment(part: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidToken("malformed token") from None
    if not isinstance(value, dict):
        raise InvalidToken("malformed token")
    return value


class TokenVerifier:
    """Checks access tokens without calling the auth service (see the module docstring)."""

    def __init__(
        self,
        jwks: JwksCache,
        sessions: SessionCheck,
        *,
        issuer: str,
        audience: str,
        leeway_s: float = 5.0,
        cache_size: int = 10_000,
        store_policy: SessionStorePolicy = SessionStorePolicy(),
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._jwks = jwks
        self._sessions = sessions
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s
        self._cache_size = cache_size
        self._policy = store_policy
        self._clock = clock
        self._monotonic = monotonic
        self._verified: dict[str, tuple[str, Principal]] = {}  # token → (kid, principal)
        self._seen_alive: dict[str, float] = {}  # session id → when EXISTS last said 1
        self._seen_ended: dict[str, None] = {}  # session ids EXISTS said 0 for (ordered set)
        self._last_degraded_log = -math.inf

    async def verify(self, token: str, *, read_only: bool = False) -> Principal:
        """The principal of ``token``; ``read_only`` says the call changes nothing (it only
        matters while the session store is unreachable, see :class:`SessionStorePolicy`)."""
        principal = await self._signed_principal(token)
        sid = principal.session_id
        try:
            alive = await self._sessions.alive(sid)
        except Exception as exc:  # the store's errors: connection refused, timeout, …
            if not self._tolerated(sid, read_only=read_only):
                raise SessionStoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
            return principal
        if not alive:
            self._seen_alive.pop(sid, None)
            _remember(self._seen_ended, sid, None, self._policy.memory)
            raise InvalidToken("session ended")
        _remember(self._seen_alive, sid, self._monotonic(), self._policy.memory)
        return principal

    def _tolerated(self, sid: str, *, read_only: bool) -> bool:
        """Whether the degraded mode accepts this session without asking the store."""
        policy = self._policy
        if policy.fail_mode != "degraded":
            return False
        if sid in self._seen_ended:
            raise InvalidToken("session ended")
        now = self._monotonic()
        seen = self._seen_alive.get(sid)
        if not read_only and (seen is None or now - seen > policy.write_grace_s):
            return False
        if now - self._last_degraded_log >= 10.0:  # one line per 10 s, not one per request
            self._last_degraded_log = now
            _log.warning(
                "session store unreachable: accepting signed tokens for %s (degraded mode)",
                "reads" if read_only else f"writes of sessions seen in {policy.write_grace_s:g} s",
            )
        return True

    async def _signed_principal(self, token: str) -> Principal:
        """Steps 1-3, remembered per token while it is valid (see the module docstring)."""
        remembered = self._verified.get(token)
        if remembered is not None:
            kid, principal = remembered
            if self._clock() < principal.expires_at + self._leeway_s and await self._jwks.key(kid):
                return principal
            del self._verified[token]  # expired, or its key was rotated out: check afresh
        kid, principal = await self._check_signature_and_claims(token)
        if self._cache_size > 0:
            if len(self._verified) >= self._cache_size:
                del self._verified[next(iter(self._verified))]  # the oldest entry
            self._verified[token] = (kid, principal)
        return principal

    async def _check_signature_and_claims(self, token: str) -> tuple[str, Principal]:
        parts = token.split(".")
        if len(token) > MAX_TOKEN_CHARS or len(parts) != 3 or not all(parts):
            raise InvalidToken("malformed token")
        header = _segment(parts[0])
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("unsupported token algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("token has no key id")
        key = await self._jwks.key(kid)
        if key is None:
            raise InvalidToken("token signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("token not valid yet") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("token from another issuer") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("bad token signature") from None
        except jwt.PyJWTError:  # also a payload too deep to parse (PyJWT catches RecursionError)
            raise InvalidToken("invalid token") from None
        return kid, _principal(claims)


def _principal(claims: Mapping[str, Any]) -> Principal:
    roles = claims["roles"]
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise InvalidToken("invalid token")
    for name in ("sub", "sid", "jti"):
        if not isinstance(claims[name], str) or not claims[name]:
            raise InvalidToken("invalid token")
    return Principal(
        user_id=claims["sub"],
        session_id=claims["sid"],
        roles=frozenset(roles),
        token_id=claims["jti"],
        expires_at=int(claims["exp"]),
    )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def jwks_from_file(path: Path) -> FetchJwks:
    """A :data:`FetchJwks` that reads a JWK Set document (``{"keys": [...]}``) from ``path``.

    For deployments that distribute the public keys as a file (a mounted ConfigMap) instead of
    asking the auth service; the file is read again at every refresh, so a rotation lands.
    """

    def read() -> Sequence[Jwk]:
        document = json.loads(path.read_text(encoding="utf-8"))
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list):
            raise ValueError(f"{path}: not a JWK Set (no 'keys' list)")
        return [
            {k: v for k, v in key.items() if isinstance(v, str)}
            for key in keys
            if isinstance(key, dict)
        ]

    async def fetch() -> Sequence[Jwk]:
        return await asyncio.to_thread(read)

    return fetch


def jwks_from_auth_service(channel: Any, *, timeout_s: float = 2.0) -> FetchJwks:
    """A :data:`FetchJwks` that asks ``portico.auth.v1.AuthService.GetJwks`` on ``channel``."""
    from portico.auth.v1 import auth_pb2

    get_jwks = channel.unary_unary(
        "/portico.auth.v1.AuthService/GetJwks",
        request_serializer=auth_pb2.GetJwksRequest.SerializeToString,
        response_deserializer=auth_pb2.GetJwksResponse.FromString,
    )

    async def fetch() -> Sequence[Jwk]:
        reply = await get_jwks(auth_pb2.GetJwksRequest(), timeout=timeout_s)
        return [
            {"kty": k.kty, "crv": k.crv, "x": k.x, "kid": k.kid, "use": k.use, "alg": k.alg}
            for k in reply.keys
        ]

    return fetch


async def open_token_verifier(
    resources: contextlib.AsyncExitStack,
    client: Any,
    jwks: FetchJwks,
    *,
    issuer: str,
    audience: str,
    session_key_prefix: str,
    jwks_max_age_s: float,
) -> TokenVerifier:
    """The token verifier every component builds the same way (gateway, users, audit).

    Keys from ``jwks`` (kept for ``jwks_max_age_s``), sessions in the Valkey of ``client``
    (remembered while subscribed to their end, ``PORTICO_SESSION_STORE_CACHE_S``), and the
    session-store fail mode of ``PORTICO_SESSION_STORE_*``. The session listener stops when
    ``resources`` closes.
    """
    store = get_session_store_settings()
    sessions = await resources.enter_async_context(
        ValkeySessions(client, key_prefix=session_key_prefix, cache_s=store.cache_s)
    )
    return TokenVerifier(
        JwksCache(jwks, max_age_s=jwks_max_age_s),
        sessions,
        issuer=issuer,
        audience=audience,
        store_policy=SessionStorePolicy.from_settings(store),
    )
