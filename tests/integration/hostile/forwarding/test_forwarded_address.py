"""Claiming another client's address: only the gateway names the address the auth service
throttles on (issue 14, item 10).

The auth service throttles logins and sign-ups per client address, the last ``x-forwarded-for``
entry, which the gateway appends for the peer it saw. It used to believe that metadata from any
caller, so a client calling the auth service directly could claim a fresh address for every
guess and never meet the per-client limit. Now the address is believed only on a call carrying
one of ``AUTH_FORWARDER_KEYS`` (the gateway's ``GATEWAY_FORWARDER_KEY``); on any other call, with
no key or a wrong one, it is the caller's gRPC peer (here 127.0.0.1). Both keys of a rotation
are honoured, and REST clients are still throttled each on its own address, whatever
``X-Forwarded-For`` they send the gateway.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from pydantic import SecretStr

from portico.auth.v1 import auth_pb2
from tests.integration.hostile.support import THROTTLE_LIMITS, refused
from tests.support.auth import FORWARDER_KEY, as_the_gateway
from tests.support.security import PASSWORD, code_of, gateway

if TYPE_CHECKING:
    from portico.auth.v1.auth_pb2_grpc import AuthServiceAsyncStub
    from portico_auth.server import RunningServer as AuthServer
    from portico_users.server import RunningServer as UsersServer

#: The key the gateway is being switched to: accepted by the auth service alongside the old one.
ROTATED_KEY = "rotated-forwarder-key-abcdefghijklmnopqrstu"
#: A key of the right shape that the auth service does not accept.
WRONG_KEY = "a-guessed-forwarder-key-0123456789abcdefgh"
VICTIM = "victim@example.com"
LIMITS = THROTTLE_LIMITS
OK, THROTTLED, REFUSED = (
    grpc.StatusCode.OK,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "throttle": LIMITS,
        "forwarder_keys": [SecretStr(FORWARDER_KEY), SecretStr(ROTATED_KEY)],
    }


def claiming(address: str, key: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata of a direct caller claiming ``address``, with ``key`` as its proof."""
    chain = (("x-forwarded-for", f"10.0.0.1, {address}"),)
    return chain if key is None else (*chain, ("x-portico-forwarder", key))


def guess(auth: AuthServiceAsyncStub, metadata: tuple[tuple[str, str], ...]) -> Any:
    request = auth_pb2.IssueTokenRequest(grant_type="password", username=VICTIM, password="guess")
    return auth.IssueToken(request, metadata=metadata, timeout=10)


@pytest.mark.parametrize("key", [None, WRONG_KEY], ids=["no-key", "wrong-key"])
async def test_a_direct_caller_cannot_move_its_login_throttle_bucket(
    auth: AuthServiceAsyncStub, key: str | None
) -> None:
    """A fresh claimed address for every guess: the guesses still count against one client."""
    codes = [
        await code_of(guess(auth, claiming(f"192.0.2.{n}", key)))
        for n in range(LIMITS.account_client_limit + 1)
    ]
    assert codes == [REFUSED] * LIMITS.account_client_limit + [THROTTLED]
    # the bucket that filled is the caller's real one: its peer's, claim or no claim
    assert await code_of(guess(auth, ())) == THROTTLED


@pytest.mark.parametrize("key", [FORWARDER_KEY, ROTATED_KEY], ids=["key", "rotated-key"])
async def test_the_gateways_key_is_honoured(auth: AuthServiceAsyncStub, key: str) -> None:
    """With an accepted key the claimed address is the client's: one bucket per address."""
    guesser, owner = claiming("203.0.113.66", key), claiming("198.51.100.10", key)
    codes = [await code_of(guess(auth, guesser)) for _ in range(LIMITS.account_client_limit + 1)]
    assert codes == [REFUSED] * LIMITS.account_client_limit + [THROTTLED]
    assert await code_of(guess(auth, owner)) == REFUSED  # another client: not throttled
    assert await code_of(guess(auth, ())) == REFUSED  # nor the caller's own peer


async def test_a_direct_caller_cannot_escape_the_sign_up_throttle(
    auth: AuthServiceAsyncStub,
) -> None:
    def sign_up(n: int, metadata: tuple[tuple[str, str], ...]) -> Any:
        request = auth_pb2.SignUpRequest(
            email=f"bulk{n}@example.com", display_name="Bulk", password=PASSWORD
        )
        return auth.SignUp(request, metadata=metadata, timeout=10)

    limit = LIMITS.signup_address_limit
    codes = [await code_of(sign_up(n, claiming(f"192.0.2.{n}", WRONG_KEY))) for n in range(limit)]
    assert codes == [OK] * limit
    assert await code_of(sign_up(limit, claiming("192.0.2.200", None))) == THROTTLED
    # the gateway, for another client, still gets through
    assert await code_of(sign_up(limit + 1, as_the_gateway("198.51.100.10"))) == OK


async def test_rest_clients_are_throttled_each_on_its_own_address(
    users_server: UsersServer,
    auth_server: AuthServer,
    valkey_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through the gateway: a guesser's claimed ``X-Forwarded-For`` (from a peer the gateway does
    not trust as a proxy) moves nothing; another client is not throttled; the key is in no log."""
    caplog.set_level(logging.DEBUG)
    form = {"grant_type": "password", "username": VICTIM, "password": "guess"}
    servers = {"users_port": users_server.port, "auth_port": auth_server.port}
    async with (
        gateway(**servers, valkey_url=valkey_url, peer=("203.0.113.66", 40000)) as guesser,
        gateway(**servers, valkey_url=valkey_url, peer=("198.51.100.10", 40000)) as owner,
    ):
        for n in range(LIMITS.account_client_limit):
            claim = {"X-Forwarded-For": f"192.0.2.{n}"}
            response = await guesser.post("/v1/auth/token", data=form, headers=claim)
            assert response.status_code == 401, response.text
        claim = {"X-Forwarded-For": "198.51.100.10"}  # even the owner's address
        refused(await guesser.post("/v1/auth/token", data=form, headers=claim), 429)
        assert (await owner.post("/v1/auth/token", data=form)).status_code == 401
    assert FORWARDER_KEY not in caplog.text
