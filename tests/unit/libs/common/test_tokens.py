"""Access-token verification: the bad-token matrix, key rotation and JWKS caching."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portico_common.tokens import (
    MAX_TOKEN_CHARS,
    InvalidToken,
    Jwk,
    JwksCache,
    KeysUnavailable,
    SessionStorePolicy,
    SessionStoreUnavailable,
    TokenVerifier,
    bearer_token,
    public_key_of,
)

ISS, AUD = "portico", "portico-api"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Key:
    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = Ed25519PrivateKey.generate()
        raw = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.x = _b64(raw)
        self.public_pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def jwk(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": self.x, "kid": self.kid, "use": "sig"}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "sub": str(uuid.uuid4()),
        "sid": uuid.uuid4().hex,
        "roles": ["user"],
        "iss": ISS,
        "aud": AUD,
        "iat": now,
        "exp": now + 900,
        "jti": uuid.uuid4().hex,
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def sign(key: Key, payload: dict[str, Any], *, kid: str | None = None) -> str:
    return jwt.encode(payload, key.private, algorithm="EdDSA", headers={"kid": kid or key.kid})


class Sessions:
    def __init__(self) -> None:
        self.ended: set[str] = set()
        self.down = False  # True: the store fails as an unreachable Valkey does

    async def alive(self, session_id: str) -> bool:
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return session_id not in self.ended


class Jwks:
    def __init__(self, *keys: Key) -> None:
        self.keys = list(keys)
        self.fetches = 0

    async def __call__(self) -> Sequence[Jwk]:
        self.fetches += 1
        return [k.jwk for k in self.keys]


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens whose signature gets checked (a spy around PyJWT's real ``decode``)."""
    seen: list[str] = []
    real = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    return seen


@pytest.fixture
def key() -> Key:
    return Key("k1")


@pytest.fixture
def sessions() -> Sessions:
    return Sessions()


@pytest.fixture
def verifier(key: Key, sessions: Sessions) -> TokenVerifier:
    return TokenVerifier(JwksCache(Jwks(key)), sessions, issuer=ISS, audience=AUD)


async def test_a_good_token_gives_its_principal(key: Key, verifier: TokenVerifier) -> None:
    payload = claims(roles=["user", "admin"])
    principal = await verifier.verify(sign(key, payload))
    assert principal.user_id == payload["sub"]
    assert principal.session_id == payload["sid"]
    assert principal.is_admin
    assert principal.expires_at == payload["exp"]


def _unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return ".".join(_b64(json.dumps(p).encode()) for p in (header, payload)) + "."


def _hs256_with_public_key(key: Key) -> str:
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = ".".join(_b64(json.dumps(p).encode()) for p in (header, claims()))
    import hashlib
    import hmac

    mac = hmac.new(key.public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _tampered(key: Key) -> str:
    head, _, sig = sign(key, claims(roles=["user"])).split(".")
    payload = _b64(json.dumps(claims(roles=["user", "admin"])).encode())
    return f"{head}.{payload}.{sig}"


BAD_TOKENS: dict[str, Callable[[Key], str]] = {
    "alg none": lambda k: _unsigned({"alg": "none", "kid": k.kid}, claims()),
    "hs256 with the public key": _hs256_with_public_key,
    "expired": lambda k: sign(k, claims(iat=int(time.time()) - 2000, exp=int(time.time()) - 60)),
    "not yet valid": lambda k: sign(k, claims(nbf=int(time.time()) + 600)),
    "wrong kid": lambda k: sign(Key("k1"), claims()),  # same kid, another key
    "unknown kid": lambda k: sign(k, claims(), kid="k9"),
    "tampered payload": _tampered,
    "wrong audience": lambda k: sign(k, claims(aud="someone-else")),
    "wrong issuer": lambda k: sign(k, claims(iss="evil")),
    "missing sid": lambda k: sign(k, claims(sid=None)),
    "roles not a list": lambda k: sign(k, claims(roles="admin")),
    "garbage": lambda k: "not-a-token",
    "empty parts": lambda k: "..",
    "header not json": lambda k: "e30K.bm9wZQ.c2ln",
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_bad_tokens_are_refused(case: str, key: Key, verifier: TokenVerifier) -> None:
    with pytest.raises(InvalidToken):
        await verifier.verify(BAD_TOKENS[case](key))


def _signed_raw(key: Key, payload: bytes) -> str:
    """A token signed by ``key`` over any payload bytes (PyJWT cannot encode a deep one)."""
    head = _b64(json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": key.kid}).encode())
    body = _b64(payload)
    return f"{head}.{body}.{_b64(key.private.sign(f'{head}.{body}'.encode()))}"


async def test_a_signed_payload_too_deep_to_parse_is_malformed(
    key: Key, verifier: TokenVerifier
) -> None:
    """Signature good, payload nested deeper than the JSON parser recurses, length within
    MAX_TOKEN_CHARS (PyJWT turns the parser's RecursionError into a DecodeError)."""
    depth = 1400
    token = _signed_raw(key, b"[" * depth + b"]" * depth)
    assert len(token) <= MAX_TOKEN_CHARS
    with pytest.raises(InvalidToken):
        await verifier.verify(token)


async def test_a_header_too_deep_to_parse_is_malformed(key: Key, verifier: TokenVerifier) -> None:
    """The header is parsed by the verifier itself (alg, kid): its RecursionError escaped and
    was taken for a session-store outage (issue 14, item 3)."""
    depth = 1400
    head = _b64(b'{"alg":"EdDSA","kid":"k1","x":' + b"[" * depth + b"]" * depth + b"}")
    token = f"{head}.{_b64(b'{}')}.{_b64(b'sig')}"
    assert len(token) <= MAX_TOKEN_CHARS
    with pytest.raises(InvalidToken, match="malformed token"):
        await verifier.verify(token)


async def test_a_token_longer_than_the_bound_is_malformed_unparsed(
    key: Key, verifier: TokenVerifier, decoded: list[str]
) -> None:
    token = sign(key, claims(pad="x" * MAX_TOKEN_CHARS))
    with pytest.raises(InvalidToken, match="malformed token"):
        await verifier.verify(token)
    assert decoded == []  # refused before PyJWT saw it


async def test_an_ended_session_refuses_its_tokens(
    key: Key, sessions: Sessions, verifier: TokenVerifier
) -> None:
    payload = claims()
    token = sign(key, payload)
    await verifier.verify(token)
    sessions.ended.add(payload["sid"])
    with pytest.raises(InvalidToken, match="session ended"):
        await verifier.verify(token)


async def test_a_rotated_in_key_is_fetched_once_then_cached(sessions: Sessions) -> None:
    old, new = Key("old"), Key("new")
    source = Jwks(old)
    clock = [0.0]
    cache = JwksCache(source, max_age_s=300, min_refresh_s=5, clock=lambda: clock[0])
    verifier = TokenVerifier(cache, sessions, issuer=ISS, audience=AUD)
    await verifier.verify(sign(old, claims()))
    assert source.fetches == 1
    source.keys.append(new)
    with pytest.raises(InvalidToken):  # within min_refresh_s: no refetch for an unknown kid
        await verifier.verify(sign(new, claims()))
    assert source.fetches == 1
    clock[0] = 6.0
    await verifier.verify(sign(new, claims()))
    await verifier.verify(sign(new, claims()))
    assert source.fetches == 2
    await verifier.verify(sign(old, claims()))  # the old key still verifies (overlap)


async def test_a_failed_refresh_keeps_the_known_keys(key: Key, sessions: Sessions) -> None:
    calls = {"n": 0}

    async def flaky() -> Sequence[Jwk]:
        calls["n"] += 1
        if calls["n"] > 1:
            raise ConnectionError("auth service down")
        return [key.jwk]

    clock = [0.0]
    cache = JwksCache(flaky, max_age_s=10, min_refresh_s=1, clock=lambda: clock[0])
    verifier = TokenVerifier(cache, sessions, issuer=ISS, audience=AUD)
    await verifier.verify(sign(key, claims()))
    clock[0] = 20.0  # stale: refetch fails, the cached key keeps working
    await verifier.verify(sign(key, claims()))
    assert calls["n"] == 2


async def test_keys_that_cannot_be_fetched_make_a_token_uncheckable_not_invalid(
    key: Key, sessions: Sessions
) -> None:
    """The auth service unreachable on first use: 503 / UNAVAILABLE (retry), never 401."""
    up = {"now": False}

    async def auth_service() -> Sequence[Jwk]:
        if not up["now"]:
            raise ConnectionError("auth service down")
        return [key.jwk]

    clock = [0.0]
    cache = JwksCache(auth_service, max_age_s=300, min_refresh_s=5, clock=lambda: clock[0])
    verifier = TokenVerifier(cache, sessions, issuer=ISS, audience=AUD)
    token = sign(key, claims())
    with pytest.raises(KeysUnavailable):
        await verifier.verify(token)
    up["now"] = True
    with pytest.raises(KeysUnavailable):  # within min_refresh_s: not asked again, still unknown
        await verifier.verify(token)
    clock[0] = 6.0
    await verifier.verify(token)


async def test_callers_arriving_during_a_fetch_share_it(key: Key, sessions: Sessions) -> None:
    fetches = {"n": 0}
    release = asyncio.Event()

    async def slow_auth_service() -> Sequence[Jwk]:
        fetches["n"] += 1
        await release.wait()
        return [key.jwk]

    verifier = TokenVerifier(JwksCache(slow_auth_service), sessions, issuer=ISS, audience=AUD)
    calls = [asyncio.create_task(verifier.verify(sign(key, claims()))) for _ in range(5)]
    await asyncio.sleep(0.05)  # all five are waiting on the one fetch
    release.set()
    principals = await asyncio.gather(*calls)
    assert len(principals) == 5
    assert fetches["n"] == 1


async def test_an_unknown_key_during_an_outage_is_unavailable_then_invalid(
    key: Key, sessions: Sessions
) -> None:
    up = {"now": True}

    async def auth_service() -> Sequence[Jwk]:
        if not up["now"]:
            raise ConnectionError("auth service down")
        return [key.jwk]

    clock = [0.0]
    cache = JwksCache(auth_service, max_age_s=300, min_refresh_s=5, clock=lambda: clock[0])
    verifier = TokenVerifier(cache, sessions, issuer=ISS, audience=AUD)
    await verifier.verify(sign(key, claims()))
    up["now"] = False
    clock[0] = 6.0
    stranger = sign(Key("stranger"), claims())  # a new key, or a forged id: no way to tell
    with pytest.raises(KeysUnavailable):
        await verifier.verify(stranger)
    await verifier.verify(sign(key, claims()))  # the held key keeps working
    up["now"] = True
    clock[0] = 12.0
    with pytest.raises(InvalidToken, match="unknown key"):  # the key set says: no such key
        await verifier.verify(stranger)


def test_only_ed25519_okp_keys_are_used() -> None:
    assert public_key_of({"kty": "RSA", "n": "x", "e": "AQAB", "kid": "r"}) is None
    assert public_key_of({"kty": "OKP", "crv": "X25519", "x": Key("a").x}) is None
    assert public_key_of({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}) is None
    assert public_key_of(Key("a").jwk) is not None


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


async def test_a_verified_token_is_remembered_but_still_expires(
    key: Key, sessions: Sessions, decoded: list[str]
) -> None:
    verifier = TokenVerifier(JwksCache(Jwks(key)), sessions, issuer=ISS, audience=AUD, leeway_s=0)
    expires = int(time.time()) + 1
    token = sign(key, claims(exp=expires))
    await verifier.verify(token)
    for _ in range(3):
        await verifier.verify(token)
    assert decoded == [token]  # remembered: the signature was checked once
    await asyncio.sleep(expires - time.time() + 1.05)
    with pytest.raises(InvalidToken, match="expired"):
        await verifier.verify(token)


async def test_a_remembered_token_still_needs_its_session(
    key: Key, sessions: Sessions, verifier: TokenVerifier
) -> None:
    payload = claims()
    token = sign(key, payload)
    await verifier.verify(token)
    sessions.ended.add(payload["sid"])
    with pytest.raises(InvalidToken, match="session ended"):
        await verifier.verify(token)


async def test_a_remembered_token_dies_with_its_key(key: Key, sessions: Sessions) -> None:
    source = Jwks(key)
    clock = [0.0]
    cache = JwksCache(source, max_age_s=10, min_refresh_s=1, clock=lambda: clock[0])
    verifier = TokenVerifier(cache, sessions, issuer=ISS, audience=AUD)
    token = sign(key, claims())
    await verifier.verify(token)
    source.keys = [Key("rotated-in")]  # the key was rotated out of the JWKS
    clock[0] = 11.0  # the JWKS is stale: refetched
    with pytest.raises(InvalidToken, match="unknown key"):
        await verifier.verify(token)


async def test_the_memory_is_bounded(key: Key, sessions: Sessions, decoded: list[str]) -> None:
    verifier = TokenVerifier(JwksCache(Jwks(key)), sessions, issuer=ISS, audience=AUD, cache_size=2)
    tokens = [sign(key, claims()) for _ in range(3)]
    for token in tokens:
        await verifier.verify(token)
    decoded.clear()
    await verifier.verify(tokens[0])  # the oldest was forgotten: checked again
    await verifier.verify(tokens[2])
    assert decoded == [tokens[0]]


def _verifier_with_clock(
    key: Key, sessions: Sessions, policy: SessionStorePolicy, now: list[float]
) -> TokenVerifier:
    return TokenVerifier(
        JwksCache(Jwks(key)),
        sessions,
        issuer=ISS,
        audience=AUD,
        store_policy=policy,
        monotonic=lambda: now[0],
    )


async def test_store_down_closed_mode_refuses_every_token(key: Key, sessions: Sessions) -> None:
    verifier = _verifier_with_clock(key, sessions, SessionStorePolicy("closed"), [0.0])
    token = sign(key, claims())
    await verifier.verify(token)
    sessions.down = True
    for read_only in (True, False):
        with pytest.raises(SessionStoreUnavailable):
            await verifier.verify(token, read_only=read_only)


async def test_store_down_degraded_mode_accepts_signed_tokens_for_reads(
    key: Key, sessions: Sessions
) -> None:
    verifier = _verifier_with_clock(key, sessions, SessionStorePolicy(), [0.0])
    sessions.down = True
    payload = claims()
    principal = await verifier.verify(sign(key, payload), read_only=True)  # never seen before
    assert principal.session_id == payload["sid"]
    for case in ("tampered payload", "wrong kid", "expired"):  # signature and claims still count
        with pytest.raises(InvalidToken):
            await verifier.verify(BAD_TOKENS[case](key), read_only=True)


async def test_store_down_degraded_mode_writes_need_a_recently_seen_session(
    key: Key, sessions: Sessions
) -> None:
    now = [100.0]
    verifier = _verifier_with_clock(key, sessions, SessionStorePolicy(write_grace_s=60), now)
    seen, unseen = sign(key, claims()), sign(key, claims())
    await verifier.verify(seen)  # the store says alive at t=100
    sessions.down = True
    now[0] = 160.0
    assert await verifier.verify(seen)  # 60 s later: still within the grace
    with pytest.raises(SessionStoreUnavailable):
        await verifier.verify(unseen)  # never seen alive: cannot be checked, not accepted
    now[0] = 160.5
    with pytest.raises(SessionStoreUnavailable):
        await verifier.verify(seen)  # the grace has passed
    assert await verifier.verify(seen, read_only=True)  # reads still work


async def test_store_down_a_session_seen_ended_stays_refused(key: Key, sessions: Sessions) -> None:
    verifier = _verifier_with_clock(key, sessions, SessionStorePolicy(), [0.0])
    payload = claims()
    token = sign(key, payload)
    await verifier.verify(token)
    sessions.ended.add(payload["sid"])
    with pytest.raises(InvalidToken, match="session ended"):
        await verifier.verify(token)
    sessions.down = True
    for read_only in (True, False):
        with pytest.raises(InvalidToken, match="session ended"):
            await verifier.verify(token, read_only=read_only)


async def test_store_down_memory_of_sessions_is_bounded(key: Key, sessions: Sessions) -> None:
    verifier = _verifier_with_clock(key, sessions, SessionStorePolicy(memory=2), [0.0])
    tokens = [sign(key, claims()) for _ in range(3)]
    for token in tokens:
        await verifier.verify(token)
    sessions.down = True
    with pytest.raises(SessionStoreUnavailable):  # the oldest session was forgotten
        await verifier.verify(tokens[0])
    assert await verifier.verify(tokens[2])
