"""Access tokens for the load, from the gateway's own auth routes.

Every ``/v1/users`` route and every UserService RPC needs an access token. The bench signs up two
callers through ``POST /v1/auth/signup`` and logs them in with the password grant
(``POST /v1/auth/token``):

* the **admin**, ``admin@example.com``, whom the dev launcher makes an admin
  (``PORTICO_DEV_ADMIN_EMAIL``): reads other users, lists, creates and patches;
* the **owner**, an ordinary user made for this run, whose own account is the cached GET's user:
  the common case of a signed-in user reading themselves.

Access tokens live 15 minutes: :meth:`Tokens.fresh` logs in again when one has less than
``min_left_s`` left, and the harness asks for the tokens before every cell, so a run of any length
keeps valid tokens.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Literal

import httpx

Caller = Literal["owner", "admin"]

ADMIN_EMAIL = "admin@example.com"  # PORTICO_DEV_ADMIN_EMAIL's default
#: Dev-stack passwords on loopback, the ones tests/e2e and the README walkthroughs use.
ADMIN_PASSWORD = "dev admin password"  # noqa: S105 (a throwaway dev-stack account)
OWNER_PASSWORD = "bench owner password"  # noqa: S105


class TokenError(Exception):
    """A sign-up or login did not give the bench a working token."""


@dataclass(slots=True)
class Login:
    email: str
    password: str
    user_id: str = ""
    token: str = ""
    expires_at: float = 0.0  # time.monotonic()


async def sign_up(client: httpx.AsyncClient, email: str, name: str, password: str) -> str | None:
    """The new user's id; None when the email is taken already (409)."""
    reply = await client.post(
        "/v1/auth/signup",
        json={
            "email": email,
            "display_name": name,
            "password": password,
            "idempotency_key": str(uuid.uuid4()),
        },
    )
    if reply.status_code == 409:
        return None
    if reply.status_code != 201:
        raise TokenError(f"sign-up of {email}: HTTP {reply.status_code} {reply.text[:300]}")
    return str(reply.json()["user_id"])


async def log_in(client: httpx.AsyncClient, login: Login) -> None:
    """Password grant: set ``login.token`` and when it expires."""
    asked = time.monotonic()
    reply = await client.post(
        "/v1/auth/token",
        data={"grant_type": "password", "username": login.email, "password": login.password},
    )
    if reply.status_code not in (200, 201):  # RFC 6749 says 200; older gateways answered 201
        raise TokenError(f"login of {login.email}: HTTP {reply.status_code} {reply.text[:300]}")
    body = reply.json()
    login.token = str(body["access_token"])
    login.expires_at = asked + float(body.get("expires_in") or 900)


class Tokens:
    """The run's two callers and their current access tokens."""

    def __init__(self, base_url: str, tag: str, *, min_left_s: float = 180.0) -> None:
        self.base_url = base_url
        self.min_left_s = min_left_s
        self.logins: dict[Caller, Login] = {
            "admin": Login(ADMIN_EMAIL, ADMIN_PASSWORD),
            "owner": Login(f"bench-owner-{tag}@example.com", OWNER_PASSWORD),
        }
        self.logins_done = 0

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=10)

    async def start(self) -> None:
        """Sign both callers up (the admin may exist already), log them in, check the admin."""
        async with self._client() as client:
            await sign_up(client, ADMIN_EMAIL, "Admin", ADMIN_PASSWORD)
            owner = self.logins["owner"]
            owner_id = await sign_up(client, owner.email, "Bench Owner", owner.password)
            if owner_id is None:
                raise TokenError(f"{owner.email} exists already: the bench data was not fresh")
            owner.user_id = owner_id
            for login in self.logins.values():
                await log_in(client, login)
                self.logins_done += 1
            probe = await client.get(
                "/v1/users", params={"page_size": 1}, headers=self.header("admin")
            )
        if probe.status_code != 200:
            raise TokenError(
                f"{ADMIN_EMAIL} cannot list users (HTTP {probe.status_code}): is it the stack's "
                "admin (PORTICO_DEV_ADMIN_EMAIL / AUTH_ADMIN_EMAILS)?"
            )

    async def fresh(self) -> None:
        """Log in again every caller whose token has less than ``min_left_s`` left."""
        stale = [
            login
            for login in self.logins.values()
            if login.expires_at - time.monotonic() < self.min_left_s
        ]
        if not stale:
            return
        async with self._client() as client:
            for login in stale:
                await log_in(client, login)
                self.logins_done += 1

    def token(self, caller: Caller) -> str:
        return self.logins[caller].token

    def header(self, caller: Caller) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(caller)}"}

    def metadata(self, caller: Caller) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token(caller)}"),)
