"""A token authority for tests: an Ed25519 key of its own, tokens like the auth service's.

Tokens are signed exactly as ``portico_auth.tokens.TokenIssuer`` signs them (EdDSA, ``kid`` =
RFC 7638 thumbprint, the same claims), so a real :class:`TokenVerifier` accepts them. Sessions
are kept either in memory (unit tier, :meth:`TokenAuthority.verifier`) or in a real Valkey under
the auth service's key layout (integration tier, :meth:`TokenAuthority.start_session_in`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portico_auth.keys import SigningKey
from portico_common.tokens import Jwk, JwksCache, TokenVerifier

ISSUER = "portico"
AUDIENCE = "portico-api"
SESSION_PREFIX = "portico:auth:v1:"


class MemorySessions:
    """Session liveness in memory (unit tier only)."""

    def __init__(self) -> None:
        self.alive_ids: set[str] = set()

    async def alive(self, session_id: str) -> bool:
        return session_id in self.alive_ids


class TokenAuthority:
    """Signs access tokens with a throwaway key and publishes it as a JWKS."""

    def __init__(self) -> None:
        self.key = SigningKey.from_private_key(Ed25519PrivateKey.generate())
        self.sessions = MemorySessions()

    @property
    def kid(self) -> str:
        return self.key.kid

    async def jwks(self) -> Sequence[Jwk]:
        return [self.key.jwk()]

    def verifier(self) -> TokenVerifier:
        """A verifier that trusts this authority, with in-memory sessions."""
        return TokenVerifier(JwksCache(self.jwks), self.sessions, issuer=ISSUER, audience=AUDIENCE)

    def sign(self, claims: dict[str, Any], *, headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(
            claims,
            self.key.private_key,
            algorithm="EdDSA",
            headers={"kid": self.kid} | (headers or {}),
        )

    def claims(
        self, user_id: str, roles: Sequence[str], session_id: str, **overrides: Any
    ) -> dict[str, Any]:
        now = int(time.time())
        return {
            "sub": user_id,
            "sid": session_id,
            "roles": list(roles),
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        } | overrides

    def token(self, user_id: str | None = None, roles: Sequence[str] = ("user",)) -> str:
        """A valid token in a new in-memory session."""
        sid = uuid.uuid4().hex
        self.sessions.alive_ids.add(sid)
        return self.sign(self.claims(user_id or str(uuid.uuid4()), roles, sid))

    def admin_token(self) -> str:
        return self.token(roles=("user", "admin"))

    async def start_session_in(
        self, valkey: Any, user_id: str | None = None, roles: Sequence[str] = ("user",)
    ) -> str:
        """A valid token whose session lives in a real Valkey, as the auth service keeps it."""
        sid = uuid.uuid4().hex
        await valkey.hset(f"{SESSION_PREFIX}session:{sid}", mapping={"user_id": user_id or ""})
        return self.sign(self.claims(user_id or str(uuid.uuid4()), roles, sid))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
