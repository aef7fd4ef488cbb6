"""Access tokens: claims, lifetime, and what verification refuses."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portico_auth.errors import Unauthenticated
from portico_auth.keys import KeyRing, SigningKey
from portico_auth.tokens import TokenIssuer, roles_for


def ring() -> KeyRing:
    key = SigningKey.from_private_key(Ed25519PrivateKey.generate())
    return KeyRing(active=key, keys=(key,))


def issuer(keys: KeyRing, **overrides: object) -> TokenIssuer:
    options: dict[str, object] = {"issuer": "portico", "audience": "portico-api", "ttl_s": 900}
    options.update(overrides)
    return TokenIssuer(keys, **options)  # type: ignore[arg-type]


def test_an_issued_token_verifies_and_has_every_claim() -> None:
    keys = ring()
    tokens = issuer(keys)

    token = tokens.issue(user_id="u-1", session_id="s" * 32, roles=["user", "admin"])

    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == ("EdDSA", keys.active.kid)
    claims = jwt.decode(token, keys.active.public_key, algorithms=["EdDSA"], audience="portico-api")
    assert set(claims) == {"sub", "sid", "roles", "iss", "aud", "exp", "iat", "jti"}
    assert claims["exp"] - claims["iat"] == 900
    verified = tokens.verify(token)
    assert (verified.user_id, verified.session_id, verified.roles) == (
        "u-1",
        "s" * 32,
        ("user", "admin"),
    )


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda keys: issuer(keys, audience="other"), id="audience"),
        pytest.param(lambda keys: issuer(keys, issuer="other"), id="issuer"),
        pytest.param(lambda keys: issuer(ring()), id="unknown-kid"),
    ],
)
def test_tokens_from_elsewhere_are_refused(make: object) -> None:
    keys = ring()
    token = make(keys).issue(user_id="u", session_id="s", roles=["user"])  # type: ignore[operator]
    with pytest.raises(Unauthenticated):
        issuer(keys).verify(token)


def test_expired_and_garbled_tokens_are_refused() -> None:
    keys = ring()
    tokens = issuer(keys, ttl_s=60)
    expired = tokens.issue(user_id="u", session_id="s", roles=["user"], now=time.time() - 120)

    for token in (expired, "not.a.jwt", expired[:-4] + "AAAA"):
        with pytest.raises(Unauthenticated):
            tokens.verify(token)


def test_roles_add_admin_for_admin_emails_only() -> None:
    assert roles_for("Boss@Example.com", ["boss@example.com"]) == ("user", "admin")
    assert roles_for("staff@example.com", ["boss@example.com"]) == ("user",)
