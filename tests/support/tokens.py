"""Signing keys and access tokens for the integration tier, made by the auth service's own code.

One Ed25519 key per test process (:func:`signing_material`): the auth servers of the tests sign
with it, and the users servers read its public half from a JWK Set file (``USERS_JWKS_FILE``),
so a users server needs no auth server to check tokens. :class:`Tokens` issues tokens as the
auth service does (``TokenIssuer``) in real sessions in the test's Valkey (``Sessions``): a
verifier cannot tell them from tokens got by logging in.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from portico_auth.keys import generate_key_file, load_key_file, load_key_ring
from portico_auth.sessions import Sessions
from portico_auth.tokens import TokenIssuer


@dataclass(frozen=True)
class SigningMaterial:
    key_file: Path
    jwks_file: Path


@functools.cache
def signing_material() -> SigningMaterial:
    """This process's test signing key (PEM) and its JWK Set (JSON), made on first use."""
    directory = Path(tempfile.mkdtemp(prefix="portico-test-keys-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    key_file = directory / "signing-key.pem"
    generate_key_file(key_file)
    jwks_file = directory / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [load_key_file(key_file).jwk()]}), "utf-8")
    return SigningMaterial(key_file, jwks_file)


class Tokens:
    """Issues access tokens in real sessions, like AuthService.IssueToken."""

    def __init__(self, valkey: Any, *, ttl_s: int = 600) -> None:
        keys = load_key_ring([signing_material().key_file], active_kid="", environment="dev")
        self.issuer = TokenIssuer(keys, issuer="portico", audience="portico-api", ttl_s=ttl_s)
        self.sessions = Sessions(
            valkey, key_prefix="portico:auth:v1:", ttl_s=3600, absolute_ttl_s=7200
        )

    async def issue(self, user_id: str | None = None, roles: Sequence[str] = ("user",)) -> str:
        """A token for ``user_id`` (a random one by default) with ``roles``, in a new session."""
        subject = user_id or str(uuid.uuid4())
        sid, _ = await self.sessions.create(user_id=subject, roles=roles)
        return self.issuer.issue(user_id=subject, session_id=sid, roles=roles)

    async def admin(self) -> str:
        return await self.issue(roles=("user", "admin"))


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying ``token``."""
    return (("authorization", f"Bearer {token}"),)


class DefaultBearer(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call that does not carry one."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        metadata = list(client_call_details.metadata or ())
        if not any(key == "authorization" for key, _ in metadata):
            metadata.append(self._header)
        details = client_call_details._replace(metadata=grpc.aio.Metadata(*metadata))
        return await continuation(details, request)
