"""Ed25519 signing keys: loading, kid, JWKS, and the helper that creates a key file.

Key files are PEM-encoded PKCS#8 Ed25519 private keys (``openssl genpkey -algorithm ed25519``
writes them too). A key's **kid** is its RFC 7638 JWK thumbprint: base64url (no padding) of the
SHA-256 of ``{"crv":"Ed25519","kty":"OKP","x":"<public key>"}``. It depends on the public key
only, so it is the same on every replica and survives renaming or moving the file.

Rotation with an overlap window: add the new key file to ``AUTH_SIGNING_KEY_FILES`` (it is
published in the JWKS at once), switch ``AUTH_ACTIVE_KID`` to it once every verifier has
fetched the JWKS, and remove the old file only after the last token it signed expired
(``AUTH_ACCESS_TOKEN_TTL_S`` later).

Without key files, ``production`` refuses to start (:class:`KeyConfigError`); ``dev`` generates
an ephemeral key and logs a warning, since its tokens die with the process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from portico_common.tokens import Jwk

_log = logging.getLogger(__name__)


class KeyConfigError(Exception):
    """The signing-key settings cannot work; the message says what to change."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One Ed25519 key pair and its kid."""

    kid: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def x(self) -> str:
        """The raw public key, base64url without padding (the JWK ``x``)."""
        raw = self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return _b64url(raw)

    def jwk(self) -> dict[str, str]:
        """The public JWK (RFC 8037) of this key."""
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": self.x,
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        }

    @classmethod
    def from_private_key(cls, private_key: Ed25519PrivateKey) -> SigningKey:
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(kid=thumbprint(_b64url(raw)), private_key=private_key)


def thumbprint(x: str) -> str:
    """The RFC 7638 thumbprint of an Ed25519 public JWK with that ``x``."""
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Every key the JWKS publishes; ``active`` is the one that signs."""

    active: SigningKey
    keys: tuple[SigningKey, ...]

    def get(self, kid: str) -> SigningKey | None:
        """The key with that kid, if it is one of ours."""
        return next((key for key in self.keys if key.kid == kid), None)

    async def fetch_jwks(self) -> Sequence[Jwk]:
        """The JWKS of these keys, as a verifier fetches one (no network involved)."""
        return [key.jwk() for key in self.keys]


def load_key_file(path: Path) -> SigningKey:
    """The Ed25519 key in a PEM PKCS#8 file; :class:`KeyConfigError` when it is not one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyConfigError(f"cannot read signing key file {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyConfigError(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return SigningKey.from_private_key(key)


def load_key_ring(files: Sequence[Path], *, active_kid: str, environment: str) -> KeyRing:
    """The keys of ``files``, the active one first. See the module docstring for the rules."""
    if not files:
        if environment == "production":
            raise KeyConfigError(
                "no signing keys: set AUTH_SIGNING_KEY_FILES to one or more PEM Ed25519 private "
                "key files (create one with `portico-auth keygen PATH`); production never "
                "generates keys"
            )
        key = SigningKey.from_private_key(Ed25519PrivateKey.generate())
        _log.warning(
            "AUTH_SIGNING_KEY_FILES is empty: signing with an EPHEMERAL key (kid %s) generated "
            "for this process; its tokens stop verifying when it restarts. Create a key file "
            "with `portico-auth keygen PATH` (AUTH_ENVIRONMENT=dev only)",
            key.kid,
        )
        return KeyRing(active=key, keys=(key,))
    keys: list[SigningKey] = []
    for path in files:
        key = load_key_file(path)
        if all(k.kid != key.kid for k in keys):
            keys.append(key)
    if not active_kid:
        active = keys[0]
    else:
        found = next((k for k in keys if k.kid == active_kid), None)
        if found is None:
            listed = ", ".join(k.kid for k in keys)
            raise KeyConfigError(
                f"AUTH_ACTIVE_KID {active_kid!r} is none of the configured keys ({listed})"
            )
        active = found
    ordered = (active, *(k for k in keys if k is not active))
    return KeyRing(active=active, keys=ordered)


def generate_key_file(path: Path) -> str:
    """Write a new Ed25519 private key to ``path`` (PEM PKCS#8, mode 0600); return its kid.

    Refuses to overwrite an existing file (``FileExistsError``): a signing key is replaced by
    rotation, never in place. Parent directories are created.
    """
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return SigningKey.from_private_key(key).kid
