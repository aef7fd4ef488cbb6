"""Bad access tokens, on REST and on gRPC: each one is refused by the gateway and by the service.

Each case makes an ``Authorization`` value (or none) and presents it to a protected REST route
(``GET /v1/users``, through the real gateway, which verifies tokens against the auth server's
JWKS) and to the same RPC on the users server (``ListUsers``, whose interceptor verifies on its
own). REST must answer 401 with ``WWW-Authenticate: Bearer …`` and a problem+json body that
shows no internals; gRPC must answer UNAUTHENTICATED. Forged tokens carry role ``admin`` and a
live session, so a verifier that let one through would answer 200/OK, not 403. Each case also
names the client-safe reason it must be refused for, so a case cannot pass by failing for
another reason than the one it is about.

PyJWT (2.x, with the verifier's 5 s leeway) refuses an ``iat`` in the future as well as an
``nbf`` in the future (``ImmatureSignatureError``): both are "token not valid yet".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portico.users.v1 import users_pb2
from portico_auth.keys import SigningKey, load_key_file
from portico_common.tokens import bearer_token
from tests.support.security import LEAKS, SESSION_PREFIX, problem
from tests.support.tokens import Tokens, signing_material

if TYPE_CHECKING:
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub

ADMIN_ROLES = ("user", "admin")
TRANSPORTS = ("rest", "grpc")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


@dataclass
class Forge:
    """Makes tokens: genuine ones (the auth service's own issuer) and forged ones."""

    tokens: Tokens
    valkey: Any
    ours: SigningKey  # the key the services trust (published in the JWKS)
    foreign: SigningKey  # a key nobody publishes

    async def genuine(self, roles: tuple[str, ...] = ADMIN_ROLES) -> str:
        return await self.tokens.issue(roles=roles)

    async def claims(self, **changes: Any) -> dict[str, Any]:
        """Valid admin claims in a live session, with ``changes`` (None removes a claim)."""
        subject = str(uuid.uuid4())
        sid, _ = await self.tokens.sessions.create(user_id=subject, roles=ADMIN_ROLES)
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": subject,
            "sid": sid,
            "roles": list(ADMIN_ROLES),
            "iss": "portico",
            "aud": "portico-api",
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, claims: dict[str, Any], *, key: SigningKey, kid: str | None = None) -> str:
        headers = {"kid": key.kid if kid is None else kid}
        return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers=headers)


@dataclass(frozen=True)
class BadToken:
    """One case: how to make the ``Authorization`` value, and why it must be refused."""

    name: str
    authorization: Callable[[Forge], Awaitable[str | None]]
    reason: str  # the verifier's client-safe reason (gRPC details, REST error_description)


CASES: list[BadToken] = []


def case(name: str, reason: str) -> Callable[[Callable[[Forge], Awaitable[str | None]]], Any]:
    def register(make: Callable[[Forge], Awaitable[str | None]]) -> Any:
        CASES.append(BadToken(name, make, reason))
        return make

    return register


def bearer(token: str) -> str:
    return f"Bearer {token}"


@case("alg-none-unsigned", "malformed token")
async def _alg_none(forge: Forge) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": forge.ours.kid}
    return bearer(f"{b64json(header)}.{b64json(await forge.claims())}.")


@case("alg-none-with-a-genuine-signature", "unsupported token algorithm")
async def _alg_none_signed(forge: Forge) -> str:
    signature = (await forge.genuine()).rsplit(".", 1)[1]
    header = {"alg": "none", "typ": "JWT", "kid": forge.ours.kid}
    return bearer(f"{b64json(header)}.{b64json(await forge.claims())}.{signature}")


@case("hs256-with-the-public-key-as-secret", "unsupported token algorithm")
async def _hs256(forge: Forge) -> str:
    secret = forge.ours.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": forge.ours.kid}
    signing_input = f"{b64json(header)}.{b64json(await forge.claims())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return bearer(f"{signing_input}.{b64url(mac)}")


@case("expired", "token expired")
async def _expired(forge: Forge) -> str:
    subject = str(uuid.uuid4())
    sid, _ = await forge.tokens.sessions.create(user_id=subject, roles=ADMIN_ROLES)
    issued = time.time() - 3600  # exp = iat + 600: long past, beyond any leeway
    token = forge.tokens.issuer.issue(
        user_id=subject, session_id=sid, roles=ADMIN_ROLES, now=issued
    )
    return bearer(token)


@case("nbf-in-the-future", "token not valid yet")
async def _nbf(forge: Forge) -> str:
    claims = await forge.claims(nbf=int(time.time()) + 3600)
    return bearer(forge.sign(claims, key=forge.ours))


@case("iat-in-the-future", "token not valid yet")
async def _iat(forge: Forge) -> str:
    later = int(time.time()) + 3600
    claims = await forge.claims(iat=later, exp=later + 600)
    return bearer(forge.sign(claims, key=forge.ours))


@case("kid-of-an-unpublished-key-signed-with-it", "token signed by an unknown key")
async def _foreign_key(forge: Forge) -> str:
    return bearer(forge.sign(await forge.claims(), key=forge.foreign))


@case("unknown-kid-signed-with-our-key", "token signed by an unknown key")
async def _unknown_kid(forge: Forge) -> str:
    return bearer(forge.sign(await forge.claims(), key=forge.ours, kid="no-such-key"))


@case("our-kid-signed-with-another-key", "bad token signature")
async def _our_kid_foreign_signature(forge: Forge) -> str:
    return bearer(forge.sign(await forge.claims(), key=forge.foreign, kid=forge.ours.kid))


@case("tampered-payload-roles-admin", "bad token signature")
async def _tampered(forge: Forge) -> str:
    header, payload, signature = (await forge.genuine(roles=("user",))).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["user", "admin"]
    return bearer(f"{header}.{b64json(claims)}.{signature}")


@case("wrong-audience", "token is for another audience")
async def _wrong_aud(forge: Forge) -> str:
    return bearer(forge.sign(await forge.claims(aud="another-api"), key=forge.ours))


@case("wrong-issuer", "token from another issuer")
async def _wrong_iss(forge: Forge) -> str:
    return bearer(forge.sign(await forge.claims(iss="someone-else"), key=forge.ours))


@case("missing-sid-claim", "invalid token")
async def _no_sid(forge: Forge) -> str:
    return bearer(forge.sign(await forge.claims(sid=None), key=forge.ours))


@case("revoked-session", "session ended")
async def _revoked(forge: Forge) -> str:
    token = await forge.genuine()
    sid = jwt.decode(token, options={"verify_signature": False})["sid"]
    assert await forge.valkey.delete(SESSION_PREFIX + sid) == 1
    return bearer(token)


@case("signature-stripped", "malformed token")
async def _stripped(forge: Forge) -> str:
    header, payload, _ = (await forge.genuine()).split(".")
    return bearer(f"{header}.{payload}.")


@case("garbage-empty", "missing bearer token")
async def _empty(forge: Forge) -> str:
    return bearer("")


@case("garbage-abc", "malformed token")
async def _abc(forge: Forge) -> str:
    return bearer("abc")


@case("garbage-a.b.c", "malformed token")
async def _abc_dotted(forge: Forge) -> str:
    return bearer("a.b.c")


@case("garbage-not-base64", "malformed token")
async def _not_base64(forge: Forge) -> str:
    return bearer("!!!.***.###")


@case("missing-authorization", "missing bearer token")
async def _missing(forge: Forge) -> None:
    return None


@case("wrong-scheme-basic", "missing bearer token")
async def _basic(forge: Forge) -> str:
    return "Basic " + base64.b64encode(b"admin@example.com:secret").decode()


@case("wrong-scheme-with-a-genuine-token", "missing bearer token")
async def _token_scheme(forge: Forge) -> str:
    return f"Token {await forge.genuine()}"


@pytest.fixture
def forge(tokens: Tokens, valkey: Any) -> Forge:
    foreign = SigningKey.from_private_key(Ed25519PrivateKey.generate())
    return Forge(tokens, valkey, load_key_file(signing_material().key_file), foreign)


async def list_users_over_grpc(
    users: UserServiceAsyncStub, authorization: str | None
) -> grpc.aio.AioRpcError | None:
    md = (("authorization", authorization),) if authorization is not None else ()
    try:
        await users.ListUsers(users_pb2.ListUsersRequest(), metadata=md, timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc
    return None


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("bad", [pytest.param(c, id=c.name) for c in CASES])
async def test_a_bad_token_is_refused(
    bad: BadToken,
    transport: str,
    forge: Forge,
    api: httpx.AsyncClient,
    users: UserServiceAsyncStub,
) -> None:
    value = await bad.authorization(forge)
    if transport == "rest":
        headers = {"Authorization": value} if value is not None else {}
        response = await api.get("/v1/users", headers=headers)
        body = problem(response, 401)
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        if bearer_token(value) is None:  # no bearer credentials at all: RFC 6750 section 3.1
            assert challenge == 'Bearer realm="portico"'  # a bare challenge, no error code
            assert body["detail"].startswith("this route needs an access token")
        else:
            assert 'error="invalid_token"' in challenge
            assert f'error_description="{bad.reason}"' in challenge
            assert body["detail"].endswith(bad.reason)
            if value is not None and len(value) > 16:
                assert value.split(" ", 1)[-1] not in response.text  # never echoed
    else:
        error = await list_users_over_grpc(users, value)
        assert error is not None, "a bad token was accepted"
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.details() == bad.reason
        for leak in LEAKS:
            assert leak not in (error.details() or "")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_same_call_with_a_genuine_token_succeeds(
    transport: str, forge: Forge, api: httpx.AsyncClient, users: UserServiceAsyncStub
) -> None:
    """The control: the matrix fails for the token alone, not for the route or the call."""
    value = bearer(await forge.genuine())
    if transport == "rest":
        response = await api.get("/v1/users", headers={"Authorization": value})
        assert response.status_code == 200, response.text
    else:
        assert await list_users_over_grpc(users, value) is None
    forged = bearer(forge.sign(await forge.claims(), key=forge.ours))  # the forger's own path
    if transport == "rest":
        assert (await api.get("/v1/users", headers={"Authorization": forged})).status_code == 200
    else:
        assert await list_users_over_grpc(users, forged) is None
