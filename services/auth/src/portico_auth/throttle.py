"""Login and sign-up throttling: fixed-window attempt counters in Valkey.

A login counts against three keys, each with its limit (``AUTH_THROTTLE__*``):

* ``<prefix>throttle:account-client:<sha256(email)>:<address>``: one client guessing one
  account's password (``account_client_limit``, 10);
* ``<prefix>throttle:account:<sha256(email)>``: all clients together on one account, a ceiling
  far higher (``account_limit``, 100), so that an attacker's failures from one address (or a
  few) throttle the attacker, not the owner who logs in from elsewhere;
* ``<prefix>throttle:address:<address>``: one client across accounts (``address_limit``).

A sign-up counts against ``<prefix>throttle:signup:<address>`` (``signup_address_limit``). The
email is hashed so that no address book accumulates in Valkey. Each attempt runs one Lua script
per key: ``INCR``, and ``PEXPIRE window`` on the first attempt of the window; the script returns
the count and the time left. An attempt over any limit is refused with ``ResourceExhausted``
(RESOURCE_EXHAUSTED + ``google.rpc.RetryInfo`` of the time left, which the gateway sends as
``Retry-After``) before the password is looked at. Unknown accounts are counted exactly like
known ones, so the throttle says nothing about which emails exist. A successful login clears its
account's counters (not the address's).

The client address is the **last** entry of ``x-forwarded-for`` (the one the gateway appended
for the peer it saw; earlier entries are client-supplied and spoofable) on a call from the
gateway, which proves itself with its forwarder key (:mod:`portico_common.forwarding`); on any
other call, with or without ``x-forwarded-for``, it is the gRPC peer, so a direct caller cannot
move its throttle bucket by claiming another address.

**Valkey down: fail open, loudly.** The attempt is allowed and a warning is logged (once per
outage, then again when Valkey is back). Refusing every login because a rate limiter's store is
down would turn a Valkey outage into a total login outage, while credentials are still fully
checked (argon2id keeps each guess expensive). In practice IssueToken then fails anyway when it
tries to store the session, so fail-open only matters for partial outages.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from pydantic import SecretStr
from valkey.asyncio import Valkey

from portico_auth.config import ThrottleSettings
from portico_auth.errors import ResourceExhausted
from portico_auth.sessions import VALKEY_FAILURES
from portico_common.forwarding import FORWARDED_FOR, trusted_forwarder
from portico_common.logs import OutageLog

_log = logging.getLogger(__name__)

# KEYS[1] = counter; ARGV[1] = window ms. Returns {count, ms left in the window}.
_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {count, left}
"""


def client_address(metadata: Any, peer: str, *, forwarder_keys: Sequence[SecretStr]) -> str:
    """The caller's address: the last ``x-forwarded-for`` entry on a call that carries one of
    ``forwarder_keys`` (the gateway's), else the peer (port removed)."""
    if trusted_forwarder(metadata, forwarder_keys):
        for key, value in metadata or ():
            if key == FORWARDED_FOR and isinstance(value, str):
                last = value.rsplit(",", 1)[-1].strip()
                if last:
                    return last[:64]
    # grpc peers look like "ipv4:127.0.0.1:5555", "ipv6:[::1]:5555", "unix:/path"
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer[:64] or "unknown"


def _digest(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


class LoginThrottle:
    """Counts login and sign-up attempts and refuses those over the limits."""

    def __init__(self, client: Valkey, settings: ThrottleSettings, *, key_prefix: str) -> None:
        self._client = client
        self._settings = settings
        self._prefix = key_prefix
        self._window_ms = max(1, round(settings.window_s * 1000))
        self._hit = client.register_script(_HIT)
        self._outage = OutageLog(
            _log,
            down="Valkey unreachable, login throttling is OFF (failing open) until it is back: "
            "%s: %s",
            up="Valkey answers again, login throttling is back on",
            up_level=logging.WARNING,
        )

    def account_key(self, email: str) -> str:
        return f"{self._prefix}throttle:account:{_digest(email)}"

    def account_client_key(self, email: str, address: str) -> str:
        return f"{self._prefix}throttle:account-client:{_digest(email)}:{address}"

    def address_key(self, address: str) -> str:
        return f"{self._prefix}throttle:address:{address}"

    def signup_key(self, address: str) -> str:
        return f"{self._prefix}throttle:signup:{address}"

    async def attempt(self, *, email: str, address: str) -> None:
        """Count one login attempt; raise ``ResourceExhausted`` when it is over a limit."""
        settings = self._settings
        await self._count(
            (
                (self.account_client_key(email, address), settings.account_client_limit),
                (self.account_key(email), settings.account_limit),
                (self.address_key(address), settings.address_limit),
            )
        )

    async def sign_up(self, *, address: str) -> None:
        """Count one sign-up attempt; raise ``ResourceExhausted`` when it is over the limit."""
        await self._count(((self.signup_key(address), self._settings.signup_address_limit),))

    async def _count(self, checks: tuple[tuple[str, int], ...]) -> None:
        retry_after_ms = 0
        try:
            for key, limit in checks:
                count, left_ms = await self._hit(keys=[key], args=[self._window_ms])
                if int(count) > limit:
                    retry_after_ms = max(retry_after_ms, int(left_ms))
        except VALKEY_FAILURES as exc:
            self._outage.failed(exc)
            return
        self._outage.succeeded()
        if retry_after_ms:
            raise ResourceExhausted(retry_after_s=retry_after_ms / 1000)

    async def succeeded(self, *, email: str, address: str) -> None:
        """A login succeeded: forget the account's failed attempts."""
        try:
            await self._client.delete(
                self.account_key(email), self.account_client_key(email, address)
            )
        except VALKEY_FAILURES as exc:
            self._outage.failed(exc)
