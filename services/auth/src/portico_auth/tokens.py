"""Access tokens: EdDSA (Ed25519) JWTs made and checked with PyJWT.

Header ``{"alg": "EdDSA", "typ": "JWT", "kid": <RFC 7638 thumbprint>}``. Claims:

=========  ==================================================================
``sub``    the user id (UUID string)
``sid``    the session id (32 hex chars); alive while ``EXISTS <prefix>session:<sid>``
``roles``  list of strings: ``["user"]``, plus ``"admin"`` for ``AUTH_ADMIN_EMAILS``
``iss``    ``AUTH_ISSUER`` (default ``portico``)
``aud``    ``AUTH_AUDIENCE`` (default ``portico-api``)
``iat``    issued at (seconds since the epoch)
``exp``    ``iat + AUTH_ACCESS_TOKEN_TTL_S`` (at most 900)
``jti``    uuid4 hex, unique per token
=========  ==================================================================

A verifier (gateway, users interceptor) checks the signature with the JWKS key named by ``kid``,
``iss``, ``aud`` and ``exp``, then the session with one ``EXISTS``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from portico_auth.errors import Unauthenticated
from portico_auth.keys import KeyRing
from portico_common.tokens import JwksCache, SessionCheck, TokenVerifier

ALGORITHM = "EdDSA"
_REQUIRED = ["sub", "sid", "roles", "iss", "aud", "exp", "iat", "jti"]


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The claims of a verified access token that the service uses."""

    user_id: str
    session_id: str
    roles: tuple[str, ...]
    expires_at: int


class TokenIssuer:
    """Signs access tokens with the active key and verifies them against every key."""

    def __init__(self, keys: KeyRing, *, issuer: str, audience: str, ttl_s: int) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self.ttl_s = ttl_s

    @property
    def keys(self) -> KeyRing:
        return self._keys

    def verifier(self, sessions: SessionCheck) -> TokenVerifier:
        """The shared verifier (what every other component runs) for the tokens this issuer
        signs: this key ring's JWKS, its issuer and audience, sessions checked in ``sessions``."""
        return TokenVerifier(
            JwksCache(self._keys.fetch_jwks), sessions, issuer=self._issuer, audience=self._audience
        )

    def issue(
        self, *, user_id: str, session_id: str, roles: Sequence[str], now: float | None = None
    ) -> str:
        """A signed access token for the user in that session."""
        issued_at = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "sub": user_id,
            "sid": session_id,
            "roles": list(roles),
            "iss": self._issuer,
            "aud": self._audience,
            "iat": issued_at,
            "exp": issued_at + self.ttl_s,
            "jti": uuid.uuid4().hex,
        }
        active = self._keys.active
        return jwt.encode(
            claims, active.private_key, algorithm=ALGORITHM, headers={"kid": active.kid}
        )

    def verify(self, token: str) -> AccessClaims:
        """The claims of a valid token (signature, kid, iss, aud, exp); else Unauthenticated.

        Does not look at the session: the caller checks it is still alive.
        """
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise Unauthenticated("invalid access token")
            claims = jwt.decode(
                token,
                key.public_key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": _REQUIRED},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated("invalid access token") from exc
        roles = claims["roles"]
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthenticated("invalid access token")
        return AccessClaims(
            user_id=str(claims["sub"]),
            session_id=str(claims["sid"]),
            roles=tuple(roles),
            expires_at=int(claims["exp"]),
        )


def roles_for(email: str, admin_emails: Sequence[str]) -> tuple[str, ...]:
    """``("user",)``, plus ``"admin"`` when ``email`` is one of ``admin_emails`` (lowercased)."""
    return ("user", "admin") if email.lower() in admin_emails else ("user",)
