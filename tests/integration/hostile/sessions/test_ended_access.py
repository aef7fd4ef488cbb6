"""Ended access ends: a deleted user, a demoted admin, an old or endless session (issue 14,
item 6).

Before: a deleted user's refresh token still minted access tokens, with their old roles; an
admin removed from ``AUTH_ADMIN_EMAILS`` kept "admin" through every refresh; a session slid
forever and its Valkey hash grew by one field per refresh; nobody could list or end another
user's sessions. Now RefreshToken checks the user and derives the roles anew before it rotates,
the ``user.deleted`` event ends every session of the user, a session ends at its absolute
lifetime, its record keeps a bounded number of spent hashes, and admins have ListUserSessions
and EndUserSessions (audited). Every test runs against the real services (users, auth, audit)
and, for REST, the real gateway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import jwt
import pytest

from portico.audit.v1 import audit_pb2
from portico.auth.v1 import auth_pb2, auth_pb2_grpc
from portico.users.v1 import users_pb2
from portico_auth.server import RunningServer as AuthServer
from portico_users.server import RunningServer as UsersServer
from tests.integration.hostile.support import refused
from tests.support.auth import running_auth
from tests.support.security import (
    ADMIN_EMAIL,
    SESSION_PREFIX,
    People,
    Person,
    authorization,
    code_of,
    gateway,
    login,
    metadata,
)
from tests.support.tokens import signing_material

if TYPE_CHECKING:
    from portico.audit.v1.audit_pb2_grpc import AuditServiceAsyncStub
    from portico.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub
    from portico.users.v1.users_pb2_grpc import UserServiceAsyncStub

TRANSPORTS = ("rest", "grpc")
#: Spent refresh tokens a session remembers for reuse detection (SECURITY.md, "Ended access").
SPENT_KEPT = 16
#: Generous: the users relay's poll, one consumer read, on a slow shared machine.
WITHIN_S = 30.0


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = WITHIN_S) -> None:
    """Poll ``check`` until it holds; fail after ``within_s``."""
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.1)


def another_auth_server(
    database_url: str, valkey_url: str, users_server: UsersServer, **overrides: Any
) -> AbstractAsyncContextManager[AuthServer]:
    """A second auth server over the same stores (a restart with other settings)."""
    return running_auth(
        database_url=database_url,
        valkey_url=valkey_url,
        users_port=users_server.port,
        key_file=signing_material().key_file,
        **overrides,
    )


async def refresh(
    transport: str, api: httpx.AsyncClient, auth: AuthServiceAsyncStub, token: str
) -> tuple[int, str]:
    """Refresh over ``transport``: (HTTP status or 200 for gRPC OK / 401 for UNAUTHENTICATED,
    the new access token or "")."""
    if transport == "rest":
        response = await api.post("/v1/auth/refresh", json={"refresh_token": token})
        if response.status_code != 200:
            refused(response, response.status_code)
            return response.status_code, ""
        return 200, response.json()["access_token"]
    try:
        grant = await refresh_grant(auth, token)
    except grpc.aio.AioRpcError as error:
        code = error.code()
    else:
        return 200, grant.access_token
    assert code == grpc.StatusCode.UNAUTHENTICATED
    return 401, ""


async def refresh_grant(auth: AuthServiceAsyncStub, token: str) -> auth_pb2.RefreshTokenResponse:
    return await auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=token), timeout=10)


def roles_of(access_token: str) -> list[str]:
    claims = jwt.decode(access_token, options={"verify_signature": False})
    return list(claims["roles"])


def sid_of(access_token: str) -> str:
    return str(jwt.decode(access_token, options={"verify_signature": False})["sid"])


async def audited(
    audit: AuditServiceAsyncStub, admin: Person, subject: str, type_: str
) -> list[audit_pb2.AuditEvent]:
    page = await audit.ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(subject=subject, type=type_, page_size=100),
        metadata=metadata(admin.access_token),
        timeout=5,
    )
    return list(page.events)


# ------------------------------------------------------------------ a deleted user


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_deleting_a_user_ends_every_session_at_once(
    transport: str,
    api: httpx.AsyncClient,
    auth: AuthServiceAsyncStub,
    users: UserServiceAsyncStub,
    people: People,
    valkey: Any,
) -> None:
    victim = people.self
    second = await login(auth, victim.email)  # a second session, never refreshed below
    sessions = {sid_of(victim.access_token), sid_of(second.access_token)}
    if transport == "rest":
        response = await api.delete(
            f"/v1/users/{victim.user_id}", headers=authorization(people.admin.access_token)
        )
        assert response.status_code == 204, response.text
    else:
        await users.DeleteUser(
            users_pb2.DeleteUserRequest(id=victim.user_id),
            metadata=metadata(people.admin.access_token),
            timeout=5,
        )

    # At once: the refresh token no longer mints access tokens (it did, with the old roles).
    assert await refresh(transport, api, auth, victim.refresh_token) == (401, "")

    # And every session ends, also the one nobody refreshed: its keys go, its access token is
    # refused by the gateway and by the users service.
    async def gone() -> bool:
        return not any([await valkey.exists(SESSION_PREFIX + sid) for sid in sessions])

    await eventually(gone)
    assert await refresh(transport, api, auth, second.refresh_token) == (401, "")
    refused(await api.get("/v1/users/me", headers=authorization(second.access_token)), 401)
    code = await code_of(
        users.GetCurrentUser(
            users_pb2.GetCurrentUserRequest(), metadata=metadata(second.access_token), timeout=5
        )
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    # The others keep theirs.
    assert await valkey.exists(SESSION_PREFIX + sid_of(people.other.access_token))


async def test_the_user_deleted_event_alone_ends_the_sessions(
    auth: AuthServiceAsyncStub, users: UserServiceAsyncStub, people: People, valkey: Any
) -> None:
    """Without any refresh: the consumer of ``user.deleted`` ends the sessions and removes the
    credential (so the email cannot log in into the void)."""
    sid = sid_of(people.other.access_token)
    await users.DeleteUser(
        users_pb2.DeleteUserRequest(id=people.other.user_id),
        metadata=metadata(people.admin.access_token),
        timeout=5,
    )

    async def gone() -> bool:
        return not await valkey.exists(SESSION_PREFIX + sid)

    await eventually(gone)
    assert await code_of(login(auth, people.other.email)) == grpc.StatusCode.UNAUTHENTICATED


# ------------------------------------------------------------------ a demoted admin


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_admin_removed_from_admin_emails_loses_admin_at_the_next_refresh(
    transport: str,
    database_url: str,
    valkey_url: str,
    users_server: UsersServer,
    auth: AuthServiceAsyncStub,
    people: People,
) -> None:
    admin = people.admin
    assert "admin" in roles_of(admin.access_token)
    # The auth service restarts without the admin's email in AUTH_ADMIN_EMAILS.
    async with (
        another_auth_server(database_url, valkey_url, users_server, admin_emails=[]) as demoted,
        grpc.aio.insecure_channel(f"127.0.0.1:{demoted.port}") as channel,
        gateway(users_port=users_server.port, auth_port=demoted.port, valkey_url=valkey_url) as api,
    ):
        status, token = await refresh(
            transport, api, auth_pb2_grpc.AuthServiceStub(channel), admin.refresh_token
        )
        assert status == 200
        assert roles_of(token) == ["user"]
        response = await api.get("/v1/users", headers=authorization(token))
        refused(response, 403)
    # Promoted again (the fixture's server lists the email): the next refresh says so.
    grant = await login(auth, ADMIN_EMAIL)
    assert "admin" in roles_of(grant.access_token)


# ------------------------------------------------------------------ endless sessions


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_session_ends_at_its_absolute_lifetime_however_often_refreshed(
    transport: str,
    database_url: str,
    valkey_url: str,
    users_server: UsersServer,
    people: People,
) -> None:
    lifetime_s = 4
    async with (
        another_auth_server(
            database_url, valkey_url, users_server, session_absolute_ttl_s=lifetime_s
        ) as short,
        grpc.aio.insecure_channel(f"127.0.0.1:{short.port}") as channel,
        gateway(users_port=users_server.port, auth_port=short.port, valkey_url=valkey_url) as api,
    ):
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        started = time.monotonic()
        grant = await login(auth, people.self.email)
        token, refreshed = grant.refresh_token, 0
        ended_with = grpc.StatusCode.UNAUTHENTICATED  # the REST branch checks its own
        while True:  # refresh all the time: the sliding lifetime (60 s) never runs out
            if transport == "rest":
                response = await api.post("/v1/auth/refresh", json={"refresh_token": token})
                if response.status_code != 200:
                    refused(response, 401)
                    break
                token = response.json()["refresh_token"]
            else:
                try:
                    token = (await refresh_grant(auth, token)).refresh_token
                except grpc.aio.AioRpcError as error:
                    ended_with = error.code()
                    break
            refreshed += 1
            assert time.monotonic() - started < lifetime_s + WITHIN_S, "the session never ended"
            await asyncio.sleep(0.2)
        assert ended_with == grpc.StatusCode.UNAUTHENTICATED
        assert refreshed >= 1
        assert time.monotonic() - started >= lifetime_s - 1  # not before its time
        # Its access tokens ended with it.
        refused(await api.get("/v1/users/me", headers=authorization(grant.access_token)), 401)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_session_record_stays_bounded_after_many_refreshes(
    transport: str,
    api: httpx.AsyncClient,
    auth: AuthServiceAsyncStub,
    people: People,
    valkey: Any,
) -> None:
    key = SESSION_PREFIX + sid_of(people.self.access_token)
    tokens = [people.self.refresh_token]
    for _ in range(3 * SPENT_KEPT):
        if transport == "rest":
            response = await api.post("/v1/auth/refresh", json={"refresh_token": tokens[-1]})
            assert response.status_code == 200, response.text
            tokens.append(response.json()["refresh_token"])
        else:
            tokens.append((await refresh_grant(auth, tokens[-1])).refresh_token)
    fields = {k.decode() for k in await valkey.hkeys(key)}
    assert fields == {"uid", "roles", "cur", "spent", "created", "refreshed", "ends"}
    assert len((await valkey.hget(key, "spent")).split()) == SPENT_KEPT
    assert await valkey.memory_usage(key) < 4096
    # A token spent longer ago than the record remembers is refused, the session left alone.
    assert (await refresh(transport, api, auth, tokens[0]))[0] == 401
    assert await valkey.exists(key)
    # A recently spent one is still recognised as reuse: the session is revoked.
    assert (await refresh(transport, api, auth, tokens[-3]))[0] == 401
    assert not await valkey.exists(key)


# ------------------------------------------------------------------ admins end sessions

Caller = str  # "anonymous", "self", "other"


def token_of(people: People, caller: Caller) -> str | None:
    return None if caller == "anonymous" else getattr(people, caller).access_token


@pytest.mark.parametrize(("caller", "status"), [("anonymous", 401), ("self", 403), ("other", 403)])
async def test_only_admins_list_and_end_sessions(
    caller: Caller,
    status: int,
    api: httpx.AsyncClient,
    auth: AuthServiceAsyncStub,
    people: People,
    valkey: Any,
) -> None:
    path = f"/v1/auth/users/{people.self.user_id}/sessions"
    headers = authorization(token_of(people, caller))
    refused(await api.get(path, headers=headers), status)
    refused(await api.delete(path, headers=headers), status)
    code = {401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED}[status]
    md = metadata(token_of(people, caller))
    listing = auth_pb2.ListUserSessionsRequest(user_id=people.self.user_id)
    ending = auth_pb2.EndUserSessionsRequest(user_id=people.self.user_id)
    assert await code_of(auth.ListUserSessions(listing, metadata=md, timeout=5)) == code
    assert await code_of(auth.EndUserSessions(ending, metadata=md, timeout=5)) == code
    assert await valkey.exists(SESSION_PREFIX + sid_of(people.self.access_token))


async def test_a_user_id_that_is_not_a_uuid_is_a_clear_400(
    api: httpx.AsyncClient, auth: AuthServiceAsyncStub, people: People
) -> None:
    headers = authorization(people.admin.access_token)
    for verb in ("GET", "DELETE"):
        body = refused(
            await api.request(verb, "/v1/auth/users/x'--/sessions", headers=headers), 400
        )
        assert {e["field"] for e in body["errors"]} == {"user_id"}
    code = await code_of(
        auth.ListUserSessions(
            auth_pb2.ListUserSessionsRequest(user_id="../admin"),
            metadata=metadata(people.admin.access_token),
            timeout=5,
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_admin_lists_and_ends_a_users_sessions_and_it_is_audited(
    transport: str,
    api: httpx.AsyncClient,
    auth: AuthServiceAsyncStub,
    audit: AuditServiceAsyncStub,
    people: People,
) -> None:
    target, admin = people.self, people.admin
    second = await login(auth, target.email)
    expected = sorted([sid_of(target.access_token), sid_of(second.access_token)])
    path = f"/v1/auth/users/{target.user_id}/sessions"
    md = metadata(admin.access_token)

    if transport == "rest":
        response = await api.get(path, headers=authorization(admin.access_token))
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        listed = response.json()["sessions"]
        assert sorted(s["session_id"] for s in listed) == expected
        assert all(s["end_time"] > s["create_time"] for s in listed)
        response = await api.delete(path, headers=authorization(admin.access_token))
        assert response.status_code == 200, response.text
        assert response.json() == {"ended": 2}
    else:
        reply = await auth.ListUserSessions(
            auth_pb2.ListUserSessionsRequest(user_id=target.user_id), metadata=md, timeout=5
        )
        assert sorted(s.session_id for s in reply.sessions) == expected
        assert all(s.end_time.ToSeconds() > s.create_time.ToSeconds() for s in reply.sessions)
        ended = await auth.EndUserSessions(
            auth_pb2.EndUserSessionsRequest(user_id=target.user_id), metadata=md, timeout=5
        )
        assert ended.ended == 2

    # At once: the access tokens and refresh tokens of both sessions are dead.
    for token in (target.access_token, second.access_token):
        refused(await api.get("/v1/users/me", headers=authorization(token)), 401)
    for token in (target.refresh_token, second.refresh_token):
        assert await refresh(transport, api, auth, token) == (401, "")
    again = await auth.ListUserSessions(
        auth_pb2.ListUserSessionsRequest(user_id=target.user_id), metadata=md, timeout=5
    )
    assert list(again.sessions) == []
    # The admin is still in; others' sessions untouched.
    assert (await api.get("/v1/users/me", headers=authorization(admin.access_token))).is_success

    # Audited: who ended which session, and who looked.
    async def recorded() -> bool:
        revoked = await audited(audit, admin, target.user_id, "auth.session_revoked")
        listed = await audited(audit, admin, target.user_id, "auth.sessions_listed")
        by_admin = [e for e in revoked if e.payload["reason"] == "admin"]
        return (
            sorted(str(e.payload["session_id"]) for e in by_admin) == expected
            and all(e.actor == admin.user_id for e in by_admin)
            and len(listed) >= 1
            and all(e.actor == admin.user_id for e in listed)
        )

    await eventually(recorded)
