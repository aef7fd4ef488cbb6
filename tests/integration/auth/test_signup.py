"""Sign-up: idempotent retries, and neither orphan user nor orphan credential after failures."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from portico.auth.v1 import auth_pb2, auth_pb2_grpc
from portico.users.v1 import users_pb2, users_pb2_grpc
from portico_auth.errors import Unavailable
from portico_auth.server import RunningServer
from portico_users.server import RunningServer as UsersServer
from portico_users.server import start as start_users
from tests.integration.auth.test_tokens import PASSWORD, login
from tests.support.auth import rows, running_auth, users_and_credentials
from tests.support.tokens import DefaultBearer, Tokens
from tests.support.users import closed_port, users_settings

if TYPE_CHECKING:
    from portico.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub


def request(email: str, key: uuid.UUID, *, password: str = PASSWORD) -> auth_pb2.SignUpRequest:
    return auth_pb2.SignUpRequest(
        email=email, display_name="Ada", password=password, idempotency_key=str(key)
    )


async def failure(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_a_retry_with_the_same_key_returns_the_same_user(
    auth: AuthServiceAsyncStub, database_url: str
) -> None:
    key = uuid.uuid4()
    first = await auth.SignUp(request("ada@example.com", key), timeout=10)
    again = await auth.SignUp(request("ada@example.com", key), timeout=10)
    concurrent = await asyncio.gather(
        *(auth.SignUp(request("ada@example.com", key), timeout=10) for _ in range(3))
    )

    assert {first.user_id, again.user_id, *(r.user_id for r in concurrent)} == {first.user_id}
    users, credentials = await users_and_credentials(database_url)
    assert users == {first.user_id}
    assert credentials == {"ada@example.com": first.user_id}


async def test_a_taken_email_or_a_reused_key_is_refused(
    auth: AuthServiceAsyncStub, database_url: str
) -> None:
    key = uuid.uuid4()
    await auth.SignUp(request("ada@example.com", key), timeout=10)

    taken = await failure(auth.SignUp(request("ADA@example.com", uuid.uuid4()), timeout=10))
    reused = await failure(auth.SignUp(request("bob@example.com", key), timeout=10))

    assert taken.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reused.code() == grpc.StatusCode.INVALID_ARGUMENT
    users, credentials = await users_and_credentials(database_url)
    assert len(users) == 1
    assert list(credentials) == ["ada@example.com"]


async def test_an_email_of_a_user_without_credential_is_taken(
    auth: AuthServiceAsyncStub, users_server: UsersServer, database_url: str, tokens: Tokens
) -> None:
    admin = [DefaultBearer(await tokens.admin())]
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{users_server.port}", interceptors=admin
    ) as channel:
        users: Any = users_pb2_grpc.UserServiceStub(channel)
        await users.CreateUser(
            users_pb2.CreateUserRequest(email="old@example.com", display_name="Old"), timeout=5
        )
    # The pre-existing user must be older than the pending row by more than the clock slack
    # (5 s): backdate it rather than sleep.
    await rows(
        database_url,
        "UPDATE users.users SET created_at = created_at - interval '1 minute'",
    )
    error = await failure(auth.SignUp(request("old@example.com", uuid.uuid4()), timeout=10))

    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    users_, credentials = await users_and_credentials(database_url)
    assert len(users_) == 1
    assert credentials == {}  # the pending row was dropped


async def retried(
    auth: AuthServiceAsyncStub, message: auth_pb2.SignUpRequest, *, within_s: float = 5.0
) -> auth_pb2.SignUpResponse:
    """SignUp retried on UNAVAILABLE, as a client would (the channel reconnects with backoff)."""
    end = asyncio.get_running_loop().time() + within_s
    while True:
        try:
            return await auth.SignUp(message, timeout=10)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            assert asyncio.get_running_loop().time() < end, "the sign-up never completed"
            await asyncio.sleep(0.1)


@pytest.fixture
async def users_port() -> int:
    return closed_port()


@pytest.fixture
async def lone_auth(
    database_url: str, valkey_url: str, key_file: Path, users_port: int
) -> AsyncIterator[RunningServer]:
    """An auth server whose users service (on ``users_port``) is not running yet."""
    async with running_auth(
        database_url=database_url,
        valkey_url=valkey_url,
        users_port=users_port,
        key_file=key_file,
    ) as running:
        yield running


async def test_with_the_users_service_down_nothing_is_left_half_done(
    lone_auth: RunningServer,
    database_url: str,
    valkey_url: str,
    users_port: int,
) -> None:
    key = uuid.uuid4()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{lone_auth.port}") as channel:
        auth: AuthServiceAsyncStub = auth_pb2_grpc.AuthServiceStub(channel)

        down = await failure(auth.SignUp(request("ada@example.com", key), timeout=10))
        assert down.code() == grpc.StatusCode.UNAVAILABLE
        users, credentials = await users_and_credentials(database_url)
        assert users == set()
        assert credentials == {"ada@example.com": None}  # pending: reserved, cannot log in

        users_server = await start_users(
            users_settings(database_url=database_url, valkey_url=valkey_url, grpc_port=users_port)
        )
        try:
            done = await retried(auth, request("ada@example.com", key))
            assert (await login(auth, "ada@example.com")).access_token
        finally:
            await users_server.stop(0)

    assert await users_and_credentials(database_url) == (
        {done.user_id},
        {"ada@example.com": done.user_id},
    )


class _Failing:
    """Makes one coroutine method of an object fail with ``Unavailable`` ``times`` times."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, target: Any, name: str, times: int):
        original = getattr(target, name)
        self.calls = 0

        async def failing(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls <= times:
                raise Unavailable()
            return await original(*args, **kwargs)

        monkeypatch.setattr(target, name, failing)


async def test_a_failure_after_create_user_deletes_the_user_again(
    auth: AuthServiceAsyncStub,
    auth_server: RunningServer,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _Failing(monkeypatch, auth_server.core._credentials, "activate", times=1)
    key = uuid.uuid4()

    error = await failure(auth.SignUp(request("ada@example.com", key), timeout=10))

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert await users_and_credentials(database_url) == (set(), {"ada@example.com": None})
    done = await auth.SignUp(request("ada@example.com", key), timeout=10)
    assert await users_and_credentials(database_url) == (
        {done.user_id},
        {"ada@example.com": done.user_id},
    )


async def test_a_user_left_by_a_crashed_sign_up_is_adopted_by_the_reconciler(
    auth: AuthServiceAsyncStub,
    auth_server: RunningServer,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = auth_server.core
    _Failing(monkeypatch, service._credentials, "activate", times=1)
    _Failing(monkeypatch, service._users, "delete_user", times=1)  # compensation fails too

    error = await failure(auth.SignUp(request("ada@example.com", uuid.uuid4()), timeout=10))

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    users, credentials = await users_and_credentials(database_url)
    assert len(users) == 1
    assert credentials == {"ada@example.com": None}  # the client gave up
    assert await service.reconcile() == 0  # not stale yet
    monkeypatch.setattr(service, "_pending_timeout_s", 0.0)

    assert await service.reconcile() == 1

    (user_id,) = users
    assert await users_and_credentials(database_url) == ({user_id}, {"ada@example.com": user_id})
    assert (await login(auth, "ada@example.com")).access_token
