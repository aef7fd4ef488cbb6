"""The auth service's own identity towards the users service: role ``provisioner``.

Sign-up creates users, looks them up and deletes them again (compensation) through
``portico.users.v1.UserService``, whose RPCs all need an access token
(``portico.access.v1.rule``). The auth service holds the signing keys, so it issues itself an
ordinary access token — ``sub`` ``service:auth``, ``roles`` ``["provisioner"]`` — in a session
of its own, and every verifier checks that token like any other: signature, ``iss``/``aud``/
``exp``, and the session in Valkey. Nothing new to trust, no shared secret to distribute, and
ending the session (or rotating the keys) revokes it like a user's.

The token is reused until less than a third of its lifetime is left; a session that vanished
(Valkey flushed, expired after the refresh-token lifetime) is replaced at the next renewal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from portico_auth.sessions import Sessions
from portico_auth.tokens import TokenIssuer

_log = logging.getLogger(__name__)

SUBJECT = "service:auth"
ROLES = ("provisioner",)


class ServiceIdentity:
    """Hands out a current access token for the auth service's calls to other services."""

    def __init__(
        self,
        tokens: TokenIssuer,
        sessions: Sessions,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tokens = tokens
        self._sessions = sessions
        self._clock = clock
        self._session_id: str | None = None
        self._token = ""
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """A valid access token (raises the sessions' ``Unavailable`` when Valkey is down)."""
        if self._clock() < self._renew_at:
            return self._token
        async with self._lock:
            now = self._clock()
            if now < self._renew_at:
                return self._token
            if self._session_id is None or not await self._sessions.alive(self._session_id):
                self._session_id, _ = await self._sessions.create(user_id=SUBJECT, roles=ROLES)
            self._token = self._tokens.issue(
                user_id=SUBJECT, session_id=self._session_id, roles=ROLES, now=now
            )
            self._renew_at = now + self._tokens.ttl_s * 2 / 3
            return self._token

    def invalidate(self) -> None:
        """Forget the current token (it was refused): the next :meth:`token` renews it."""
        self._renew_at = 0.0

    async def close(self) -> None:
        """End the identity's session (on shutdown); its tokens stop working."""
        if self._session_id is not None:
            session, self._session_id, self._renew_at = self._session_id, None, 0.0
            await self._sessions.end(session)

    async def close_quietly(self) -> None:
        """:meth:`close`, or a one-line warning when Valkey is down (the session expires)."""
        try:
            await self.close()
        except Exception as exc:  # Valkey down at shutdown: the session expires by itself
            _log.warning(
                "could not end the service identity's session (%s: %s); it expires by itself",
                type(exc).__name__,
                exc,
            )

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC call metadata carrying the token."""
        return (("authorization", f"Bearer {await self.token()}"),)
