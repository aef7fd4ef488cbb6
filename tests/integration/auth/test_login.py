"""Login: one answer for unknown users and wrong passwords, throttling, validation."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.rpc import error_details_pb2

from portico.auth.v1 import auth_pb2
from portico.users.v1 import users_pb2, users_pb2_grpc
from portico_auth.config import Argon2Settings, ThrottleSettings
from portico_users.server import RunningServer as UsersServer
from tests.integration.auth.test_tokens import PASSWORD, login, sign_up
from tests.support.auth import as_the_gateway
from tests.support.tokens import DefaultBearer, Tokens
from tests.support.users import field_violations, rich_status

if TYPE_CHECKING:
    from portico.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub


async def failure(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def retry_delay_s(error: grpc.aio.AioRpcError) -> float:
    for detail in rich_status(error).details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.ToMilliseconds()) / 1000
    raise AssertionError("no RetryInfo detail")


# argon2 costly enough (about 10 ms) that hashing dominates each call, as in production
@pytest.mark.parametrize(
    "settings_overrides",
    [{"argon2": Argon2Settings(time_cost=2, memory_cost_kib=8192, parallelism=1)}],
)
async def test_unknown_user_and_wrong_password_look_the_same(auth: AuthServiceAsyncStub) -> None:
    await sign_up(auth, "known@example.com")

    async def attempt(username: str) -> tuple[grpc.aio.AioRpcError, float]:
        began = time.perf_counter()
        error = await failure(login(auth, username, "wrong password!"))
        return error, time.perf_counter() - began

    wrong, unknown = [], []
    for _ in range(5):
        wrong.append(await attempt("known@example.com"))
        unknown.append(await attempt("nobody@example.com"))

    for (a, _), (b, _) in zip(wrong, unknown, strict=True):
        assert a.code() == b.code() == grpc.StatusCode.UNAUTHENTICATED
        assert a.details() == b.details() == "invalid username or password"
        assert rich_status(a) == rich_status(b)
    wrong_s = statistics.median(t for _, t in wrong)
    unknown_s = statistics.median(t for _, t in unknown)
    assert 0.5 < unknown_s / wrong_s < 2.0, (wrong_s, unknown_s)


async def test_a_pending_credential_cannot_log_in(
    auth: AuthServiceAsyncStub, database_url: str
) -> None:
    from tests.support.auth import rows

    await rows(
        database_url,
        "INSERT INTO auth.credentials (email, display_name, password_hash, idempotency_key)"
        " VALUES ('p@example.com', 'P', 'x', gen_random_uuid())",
    )
    error = await failure(login(auth, "p@example.com"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "throttle": ThrottleSettings(
                account_client_limit=3, account_limit=100, address_limit=100, window_s=1.0
            )
        }
    ],
)
async def test_an_account_is_throttled_then_recovers(auth: AuthServiceAsyncStub) -> None:
    await sign_up(auth, "t@example.com")
    for _ in range(3):
        assert (await failure(login(auth, "t@example.com", "bad password"))).code() == (
            grpc.StatusCode.UNAUTHENTICATED
        )

    throttled = await failure(login(auth, "t@example.com"))  # even the right password
    assert throttled.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    delay = retry_delay_s(throttled)
    assert 0 < delay <= 1.0
    other = await failure(login(auth, "someone-else@example.com", "bad password"))
    assert other.code() == grpc.StatusCode.UNAUTHENTICATED  # other accounts are not affected

    await asyncio.sleep(delay + 0.05)  # the window ends
    grant = await login(auth, "t@example.com")
    assert grant.access_token


@pytest.mark.parametrize(
    "settings_overrides",
    [{"throttle": ThrottleSettings(account_limit=100, address_limit=2, window_s=1.0)}],
)
async def test_a_client_address_is_throttled_across_accounts(auth: AuthServiceAsyncStub) -> None:
    await sign_up(auth, "a@example.com")

    def from_address(address: str, username: str) -> Any:
        request = auth_pb2.IssueTokenRequest(
            grant_type="password", username=username, password=PASSWORD
        )
        # the gateway appends the peer it saw; earlier entries are the client's own claims
        metadata = as_the_gateway(f"10.9.9.9, {address}")
        return auth.IssueToken(request, metadata=metadata, timeout=5)

    for name in ("x", "y"):
        error = await failure(from_address("198.51.100.7", f"{name}@example.com"))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = await failure(from_address("198.51.100.7", "a@example.com"))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await from_address("198.51.100.8", "a@example.com")).access_token


async def test_requests_are_validated(auth: AuthServiceAsyncStub) -> None:
    error = await failure(
        auth.IssueToken(
            auth_pb2.IssueTokenRequest(grant_type="client_credentials", username="u", password="p"),
            timeout=5,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(error)] == ["grant_type"]

    error = await failure(
        auth.SignUp(
            auth_pb2.SignUpRequest(
                email="not-an-email", display_name=" ", password="short", idempotency_key="k"
            ),
            timeout=5,
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {f for f, _ in field_violations(error)}
    assert fields == {"email", "display_name", "password", "idempotency_key"}
    assert "short" not in str(field_violations(error))  # no password echoed back


async def test_the_credential_of_a_deleted_user_is_removed_at_login(
    auth: AuthServiceAsyncStub, users_server: UsersServer, database_url: str, tokens: Tokens
) -> None:
    from tests.support.auth import users_and_credentials

    user_id = await sign_up(auth, "gone@example.com")
    admin = [DefaultBearer(await tokens.admin())]
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{users_server.port}", interceptors=admin
    ) as channel:
        users: Any = users_pb2_grpc.UserServiceStub(channel)
        await users.DeleteUser(users_pb2.DeleteUserRequest(id=user_id), timeout=5)

    error = await failure(login(auth, "gone@example.com"))

    assert error.details() == "invalid username or password"
    assert await users_and_credentials(database_url) == (set(), {})


async def test_the_idempotency_key_must_be_a_uuid(auth: AuthServiceAsyncStub) -> None:
    """When sent: it is optional (issue 14), but not anything."""
    request = auth_pb2.SignUpRequest(
        email="k@example.com", display_name="K", password=PASSWORD, idempotency_key="not-a-uuid"
    )
    error = await failure(auth.SignUp(request, timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    request.idempotency_key = str(uuid.uuid4())
    assert (await auth.SignUp(request, timeout=5)).user_id
