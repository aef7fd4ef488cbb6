"""What the auth service does, independent of gRPC: sign-up, login, refresh, logout.

Sign-up consistency (no user without a credential, no credential without a user)
---------------------------------------------------------------------------------
Two stores take part: ``auth.credentials`` (ours) and the users service (CreateUser assigns the
id). There is no distributed transaction, so a sign-up is a small saga around a *pending* row:

1. ``INSERT`` a pending credential (email, display name, argon2id hash, the client's
   ``idempotency_key``). It reserves the email among credentials; only *active* rows log in.
2. ``CreateUser``. ALREADY_EXISTS here means either an earlier attempt of this very row created
   the user and its answer was lost (crash, timeout), or a user with that email existed before.
   We look the user up by email: created no earlier than the row (within ``_CLOCK_SLACK``) →
   it is ours, *adopt* it; older → it is someone else's: drop the pending row, ALREADY_EXISTS.
3. Activate the row with the user id (conditional on it still being that pending row). If that
   fails after the user was created, delete the user again (compensation); if the delete fails
   too, the pending row remains and step 2 adopts the user later.

A pending row always reaches an end: a retry with the same key resumes at step 2 (the first
request's password and display name count), and :meth:`AuthService.reconcile` does the same for
rows older than ``pending_timeout_s`` whose client never came back. So at every moment each user
created by sign-up either has an active credential or is named by a pending row being driven to
one, and a credential is active only once its user exists. Retrying a finished sign-up with its
key returns the same user; another sign-up for a reserved or taken email is ALREADY_EXISTS.

A credential whose user was later deleted through the users service is removed, and every
session of the user ended, by the consumer of ``user.deleted`` events (``deletions.py``), and
in any case at the next successful password check (login answers as for a wrong password) or
refresh (which checks the user before it spends the token, and derives the roles anew).

Events (docs/architecture.md, "Events"): activation writes ``credential.created`` in its own
transaction (see the repository). Sessions live in Valkey, so ``auth.logged_in`` and
``auth.session_revoked`` (logout, refresh-token reuse) are written to the outbox right *after*
the Valkey change succeeded, in a transaction of their own: if the process dies in between, or
PostgreSQL refuses the write (logged as a warning; the call itself still succeeds), that event
is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta
from uuid import UUID

from portico_auth.domain import Credential, CredentialState, TokenGrant, UserRef
from portico_auth.errors import (
    BAD_CREDENTIALS,
    BAD_REFRESH_TOKEN,
    Aborted,
    AlreadyExists,
    DomainError,
    InvalidArgument,
    Unauthenticated,
)
from portico_auth.passwords import Passwords
from portico_auth.repository import CredentialRepository
from portico_auth.sessions import Rotation, SessionInfo, Sessions
from portico_auth.throttle import LoginThrottle
from portico_auth.tokens import TokenIssuer, roles_for
from portico_auth.users_client import UsersClient
from portico_common.outbox import Event, new_event

_log = logging.getLogger(__name__)

#: Tolerated clock difference between our database and the users service's when deciding
#: whether a user was created by this sign-up (step 2 above).
_CLOCK_SLACK = timedelta(seconds=5)


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


class AuthService:
    """Sign-up, login, refresh and logout over the stores and the users service."""

    def __init__(
        self,
        *,
        credentials: CredentialRepository,
        users: UsersClient,
        passwords: Passwords,
        sessions: Sessions,
        throttle: LoginThrottle,
        tokens: TokenIssuer,
        admin_emails: Sequence[str],
        pending_timeout_s: float,
    ) -> None:
        self._credentials = credentials
        self._users = users
        self._passwords = passwords
        self._sessions = sessions
        self._throttle = throttle
        self._tokens = tokens
        self._admin_emails = tuple(admin_emails)
        self._pending_timeout_s = pending_timeout_s

    # ---------------------------------------------------------------- sign-up

    async def sign_up(
        self,
        *,
        email: str,
        display_name: str,
        password: str,
        idempotency_key: UUID,
        address: str,
    ) -> Credential:
        """Create user and credential (see the module docstring); the active credential.

        Throttled per client ``address`` (each attempt costs an argon2id hash and a user).
        """
        await self._throttle.sign_up(address=address)
        earlier = await self._credentials.by_key(idempotency_key)
        if earlier is None:
            if await self._credentials.by_email(email) is not None:
                raise AlreadyExists()
            password_hash = await self._passwords.hash(password)
            earlier = await self._credentials.insert_pending(
                email=email,
                display_name=display_name,
                password_hash=password_hash,
                idempotency_key=idempotency_key,
            )
            if earlier is None:  # a concurrent request took the email or the key
                earlier = await self._credentials.by_key(idempotency_key)
                if earlier is None:
                    raise AlreadyExists()
        if earlier.email.lower() != email.lower():
            raise InvalidArgument.for_field(
                "idempotency_key", "was already used for a sign-up with another email"
            )
        return await self._complete(earlier)

    async def _complete(self, credential: Credential) -> Credential:
        """Drive a credential to active (or drop it with ALREADY_EXISTS); idempotent."""
        if credential.state is CredentialState.ACTIVE:
            return credential
        created = False
        try:
            user = await self._users.create_user(
                email=credential.email, display_name=credential.display_name
            )
            created = True
        except AlreadyExists:
            user = await self._adoptable_user(credential)
        try:
            activated = await self._credentials.activate(credential, user_id=user.id)
        except AlreadyExists:  # the adopted user already has a credential (its email changed)
            await self._credentials.drop_pending(credential)
            raise
        except DomainError:
            if created:
                await self._compensate(user)
            raise
        if activated:
            _log.info("sign-up complete: user %s", user.id)
            return await self._reload(credential)
        current = await self._credentials.by_id(credential.id)
        if current is not None and current.user_id == user.id:
            return current  # a concurrent retry activated it with the same user
        if created:
            await self._compensate(user)
        raise Aborted("the sign-up changed concurrently; retry it")

    async def _adoptable_user(self, credential: Credential) -> UserRef:
        """The user an earlier attempt of ``credential`` created, or ALREADY_EXISTS."""
        user = await self._users.find_by_email(credential.email)
        if user is None:
            raise Aborted("the sign-up changed concurrently; retry it")
        if user.created_at < credential.created_at - _CLOCK_SLACK:
            _log.info("sign-up for an email that an older user has: dropping the pending row")
            await self._credentials.drop_pending(credential)
            raise AlreadyExists()
        _log.info("adopting user %s created by an interrupted sign-up", user.id)
        return user

    async def _compensate(self, user: UserRef) -> None:
        """Undo a CreateUser whose credential could not be activated (best effort)."""
        try:
            await self._users.delete_user(user.id)
            _log.warning("sign-up failed after creating user %s; user deleted again", user.id)
        except DomainError:
            _log.warning(
                "sign-up failed after creating user %s and deleting it failed too; the pending "
                "credential adopts it on retry or reconciliation",
                user.id,
            )

    async def _reload(self, credential: Credential) -> Credential:
        current = await self._credentials.by_id(credential.id)
        if current is None:  # pragma: no cover - active rows are deleted only at login
            raise Aborted("the sign-up changed concurrently; retry it")
        return current

    async def reconcile_forever(self, interval_s: float) -> None:
        """:meth:`reconcile` every ``interval_s`` (the service's background task)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                ended = await self.reconcile()
            except Exception as exc:  # PostgreSQL down: try again next round
                _log.warning(
                    "sign-up reconciliation failed (%s: %s); retrying later",
                    type(exc).__name__,
                    exc,
                )
            else:
                if ended:
                    _log.info("reconciled %d pending sign-up(s)", ended)

    async def reconcile(self) -> int:
        """Drive every pending credential older than the timeout to an end; how many ended."""
        ended = 0
        for credential in await self._credentials.stale_pending(
            older_than_s=self._pending_timeout_s
        ):
            try:
                await self._complete(credential)
            except AlreadyExists:
                ended += 1  # dropped: the email belongs to an older user
            except DomainError as error:
                _log.warning(
                    "reconciling pending credential %s: %s", credential.id, error.grpc_code.name
                )
            else:
                ended += 1
        return ended

    # ---------------------------------------------------------------- tokens

    async def issue_token(self, *, username: str, password: str, address: str) -> TokenGrant:
        """OAuth2 password grant: throttle, check the password, start a session."""
        email = username.strip()
        await self._throttle.attempt(email=email, address=address)
        credential = await self._credentials.by_email(email)
        if credential is None or credential.state is not CredentialState.ACTIVE:
            await self._passwords.verify_dummy(password)
            raise Unauthenticated(BAD_CREDENTIALS)
        if not await self._passwords.verify(credential.password_hash, password):
            raise Unauthenticated(BAD_CREDENTIALS)
        assert credential.user_id is not None  # noqa: S101 - enforced by a CHECK constraint
        if await self._users.get_user(credential.user_id) is None:
            _log.info("removing the credential of deleted user %s", credential.user_id)
            await self._credentials.delete(credential.id)
            raise Unauthenticated(BAD_CREDENTIALS)
        await self._throttle.succeeded(email=email, address=address)
        if self._passwords.needs_rehash(credential.password_hash):
            await self._credentials.set_password_hash(
                credential.id, await self._passwords.hash(password)
            )
        user_id = str(credential.user_id)
        roles = roles_for(credential.email, self._admin_emails)
        session_id, refresh_token = await self._sessions.create(user_id=user_id, roles=roles)
        await self._record_after(
            new_event(
                "auth.logged_in",
                subject=user_id,
                actor=user_id,
                payload={"session_id": session_id},
            )
        )
        return self._grant(user_id, session_id, roles, refresh_token)

    async def refresh(self, *, refresh_token: str) -> TokenGrant:
        """Rotate a refresh token, with roles derived anew; a reused one revokes its session.

        Before the token is spent, its user is checked (see :meth:`_current_roles`): a user who
        was deleted has all their sessions ended here, whatever the event consumer did yet, and
        the roles follow the credential's email and today's ``AUTH_ADMIN_EMAILS``. When the
        check cannot be made (the users service or PostgreSQL is down) the token stays unspent
        and the call is UNAVAILABLE, so the client may retry it.
        """
        owner = await self._sessions.current_owner(refresh_token)
        roles: tuple[str, ...] = ()
        if owner is not None and not _is_uuid(owner):
            raise Unauthenticated(BAD_REFRESH_TOKEN)  # not a person's (the service identity's)
        if owner is not None:
            current = await self._current_roles(owner)
            if current is None:
                _log.info("refresh for deleted user %s: ending their sessions", owner)
                await self.end_sessions_of(owner, actor=None, reason="user_deleted")
                raise Unauthenticated(BAD_REFRESH_TOKEN)
            roles = current
        # Without an owner the token is not the current one: rotating it cannot succeed, but it
        # tells a spent token (reuse: the session is revoked) from an unknown one.
        result = await self._sessions.rotate(refresh_token, roles=roles)
        session_id = refresh_token.partition(".")[0]
        if result.outcome is Rotation.REUSED:
            _log.warning("refresh token reuse: session revoked")
            await self._record_after(
                self._session_event(
                    result.user_id, session_id, actor=None, reason="refresh_token_reuse"
                )
            )
        if result.outcome is not Rotation.ROTATED or not roles:
            raise Unauthenticated(BAD_REFRESH_TOKEN)
        return self._grant(result.user_id, session_id, roles, result.refresh_token)

    async def _current_roles(self, user_id: str) -> tuple[str, ...] | None:
        """The roles ``user_id`` has now, or None when they may no longer have a session.

        None when the user has no active credential or the users service no longer knows the
        user (whose credential is then removed, as at login). The roles come from the
        credential's email, which only sign-up sets (a user cannot change it through
        UpdateUser into an admin's address), and the configured admin emails.
        """
        uid = UUID(user_id)
        credential = await self._credentials.by_user(uid)
        if credential is None or credential.state is not CredentialState.ACTIVE:
            return None
        if await self._users.get_user(uid) is None:
            _log.info("removing the credential of deleted user %s", uid)
            await self._credentials.delete(credential.id)
            return None
        return roles_for(credential.email, self._admin_emails)

    # ---------------------------------------------------------------- ending sessions

    async def end_sessions_of(self, user_id: str, *, actor: str | None, reason: str) -> int:
        """End every session of ``user_id`` (their access tokens stop at once); how many.

        One ``auth.session_revoked`` event per session this call ended, with ``reason``.
        """
        ended = await self._sessions.end_all(user_id)
        if ended:
            await self._record_after(
                *(self._session_event(user_id, sid, actor=actor, reason=reason) for sid in ended)
            )
        return len(ended)

    async def list_sessions(self, user_id: str, *, actor: str | None) -> list[SessionInfo]:
        """The live sessions of ``user_id``; the look is recorded (``auth.sessions_listed``)."""
        found = await self._sessions.of_user(user_id)
        await self._record_after(
            new_event(
                "auth.sessions_listed",
                subject=user_id,
                actor=actor,
                payload={"sessions": len(found)},
            )
        )
        return found

    async def user_deleted(self, user_id: str, *, actor: str | None) -> int:
        """A ``user.deleted`` event: end the user's sessions and remove their credential."""
        ended = await self.end_sessions_of(user_id, actor=actor, reason="user_deleted")
        credential = await self._credentials.by_user(UUID(user_id))
        if credential is not None:
            await self._credentials.delete(credential.id)
        return ended

    async def logout(self, *, refresh_token: str, bearer: str | None) -> None:
        """End the session of ``refresh_token``, else of the ``bearer`` access token."""
        if refresh_token:
            result = await self._sessions.end_with_refresh_token(refresh_token)
            if not result.ended:
                raise Unauthenticated(BAD_REFRESH_TOKEN)
            if result.user_id:  # this call ended it (not: it was already gone)
                await self._record_after(
                    self._session_event(
                        result.user_id,
                        refresh_token.partition(".")[0],
                        actor=result.user_id,
                        reason="logout",
                    )
                )
            return
        if not bearer:
            raise Unauthenticated("send a refresh_token or an authorization: Bearer access token")
        claims = self._tokens.verify(bearer)
        if await self._sessions.end(claims.session_id):
            await self._record_after(
                self._session_event(
                    claims.user_id, claims.session_id, actor=claims.user_id, reason="logout"
                )
            )

    @staticmethod
    def _session_event(user_id: str, session_id: str, *, actor: str | None, reason: str) -> Event:
        return new_event(
            "auth.session_revoked",
            subject=user_id,
            actor=actor,
            payload={"session_id": session_id, "reason": reason},
        )

    async def _record_after(self, *events: Event) -> None:
        """Write events after their Valkey change succeeded; a failure loses them."""
        try:
            await self._credentials.record(*events)
        except DomainError as error:
            _log.warning(
                "event(s) %s (%s) lost: the outbox write failed: %s",
                ", ".join(sorted({e.type for e in events})),
                ", ".join(str(e.id) for e in events),
                error.grpc_code.name,
            )

    def _grant(
        self, user_id: str, session_id: str, roles: Sequence[str], refresh_token: str
    ) -> TokenGrant:
        access = self._tokens.issue(user_id=user_id, session_id=session_id, roles=roles)
        return TokenGrant(
            access_token=access, expires_in=self._tokens.ttl_s, refresh_token=refresh_token
        )
