"""Rate limits per client address and per user: GCRA, computed atomically inside Valkey.

:class:`RateLimitMiddleware` (pure ASGI) checks every HTTP request but the probes and the scrape
(:data:`EXEMPT_PATHS`) against up to two limits, each a rate per minute plus a burst:

* ``address``: the peer address (``scope["client"]``; the gateway sits behind the mesh, so
  ``X-Forwarded-For`` is not trusted for limits), always;
* ``user``: ``principal.user_id``, when the (outer) authentication middleware put a
  :class:`~portico_common.tokens.Principal` in ``scope["state"]["principal"]``.

**Algorithm.** GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp): a
limit of ``R`` per minute with burst ``B`` has the emission interval ``T = 60 s / R``, and each
key stores its *theoretical arrival time* (TAT). A request is conforming when
``now >= TAT - B·T + T``; it then moves TAT to ``max(TAT, now) + T``. So ``B`` requests may come
at once, then one every ``T``. One Lua script (:data:`_GCRA`, run with EVALSHA through
``register_script``, which reloads it after a Valkey restart) checks *every* applicable limit and
only then advances them all: a request is served only if all limits allow it, and a refused
request consumes no quota. The clock is Valkey's ``TIME``, so all gateway replicas agree. Keys
are ``portico:gateway:v1:rl:<policy>:<id>`` and expire when their bucket is full again.

**Headers** (draft-ietf-httpapi-ratelimit-headers-11, structured-field lists):
``RateLimit-Policy: "address";q=<burst>;w=<s>`` (``w`` = the time to refill the whole burst, so
``q/w`` is the sustained rate) and ``RateLimit: "address";r=<remaining>;t=<s>`` on every limited
response. On a success ``t`` is the time until the bucket is full again; a refusal (429
problem+json, ``Retry-After`` in whole seconds, at least 1) lists only the exhausted policies,
with ``r=0`` and ``t`` = the wait, so ``Retry-After`` is never earlier than the end of any
advertised window (as the draft asks). A limit set to 0 per minute is off.

**Valkey down: fail open.** When the script errors or times out, the request is served without
limits, ``portico_gateway_rate_limit_errors_total`` is incremented and a warning is logged at
most once per ``warning_interval_s``. Availability of the API matters more than strict limiting
during a Valkey outage: refusing every request because the limiter's store is gone would turn a
cache outage into a total API outage, while the mesh ingress still applies its coarse limits and
the auth service's login throttle (which guards the expensive password checks) fails open the
same way. The limit is a fairness and abuse brake, not an authorisation check.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from valkey.exceptions import ValkeyError

from portico_common.tokens import Principal
from portico_gateway.errors import problem
from portico_gateway.middleware.asgi import no_body

_log = logging.getLogger(__name__)

KEY_PREFIX = "portico:gateway:v1:rl:"
#: Probes and scrapes are never limited.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
VALKEY_FAILURES = (ValkeyError, OSError)  # OSError covers refused connections and timeouts
_US = 1_000_000

# KEYS[i]: the TAT (µs) of one limit; ARGV[2i-1], ARGV[2i]: its emission interval (µs), burst.
# Reply: {allowed (1/0), then per key: remaining, µs}. Allowed: every key advanced, µs = until
# its bucket is full again. Refused: nothing written, remaining = what is left without this
# request, µs = the wait until one request conforms (0 when the key is not exhausted).
_GCRA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tats, avail, allowed = {}, {}, 1
for i = 1, #KEYS do
  local interval, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local tat = now
  local stored = redis.call('GET', KEYS[i])
  if stored then tat = math.max(tonumber(stored), now) end
  local a = math.floor((now - tat + burst * interval) / interval)
  if a < 1 then allowed = 0 end
  tats[i], avail[i] = tat, a
end
local reply = {allowed}
for i = 1, #KEYS do
  local interval, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  if allowed == 1 then
    local tat = tats[i] + interval
    local ttl_ms = math.ceil((tat - now) / 1000)
    redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', ttl_ms)
    reply[#reply + 1] = avail[i] - 1
    reply[#reply + 1] = tat - now
  else
    reply[#reply + 1] = math.max(avail[i], 0)
    reply[#reply + 1] = math.max(tats[i] - (burst - 1) * interval - now, 0)
  end
end
return reply
"""


@functools.cache
def rate_limit_errors() -> Counter:
    """Checks that failed because Valkey did not answer (created once, default registry)."""
    return Counter(
        "portico_gateway_rate_limit_errors",
        "Rate-limit checks that failed because Valkey errored or timed out (request served).",
    )


@dataclass(frozen=True, slots=True)
class Limit:
    """``per_minute`` requests per minute with bursts of ``burst``; 0 per minute is off."""

    per_minute: int
    burst: int

    @property
    def interval_us(self) -> int:
        return max(1, 60 * _US // self.per_minute)

    @property
    def window_s(self) -> int:
        """Seconds to refill the whole burst (the ``w`` of ``RateLimit-Policy``)."""
        return max(1, math.ceil(self.burst * self.interval_us / _US))


@dataclass(frozen=True, slots=True)
class _Check:
    policy: str
    key: str
    limit: Limit


@dataclass(frozen=True, slots=True)
class _State:
    policy: str
    remaining: int
    micros: int


def _seconds(micros: int) -> int:
    return max(0, math.ceil(micros / _US))


class RateLimitMiddleware:
    """Refuses requests over the per-address or per-user limit with 429 (see the module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        address: Limit,
        user: Limit,
        warning_interval_s: float = 60.0,
    ) -> None:
        self.app = app
        self.address = address
        self.user = user
        self.warning_interval_s = warning_interval_s
        self._last_warning = -math.inf
        self._unreported = 0  # failures since the last warning
        self._client: Any = None
        self._script: Any = None
        self._errors = rate_limit_errors()
        self._off = address.per_minute <= 0 and user.per_minute <= 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._off or scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        checks = self._checks(scope)
        if not checks:
            await self.app(scope, receive, send)
            return
        try:
            allowed, states = await self._run(scope["state"]["valkey"], checks)
        except VALKEY_FAILURES as exc:
            self._failed(exc)
            await self.app(scope, receive, send)
            return
        policy = ", ".join(f'"{c.policy}";q={c.limit.burst};w={c.limit.window_s}' for c in checks)
        if not allowed:
            await self._refuse(scope, send, policy, [s for s in states if s.remaining == 0])
            return
        limit = ", ".join(f'"{s.policy}";r={s.remaining};t={_seconds(s.micros)}' for s in states)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.append("RateLimit-Policy", policy)
                headers.append("RateLimit", limit)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _checks(self, scope: Scope) -> list[_Check]:
        checks: list[_Check] = []
        if self.address.per_minute > 0:
            client = scope.get("client")
            address = client[0] if client else "unknown"
            checks.append(_Check("address", f"{KEY_PREFIX}address:{address}", self.address))
        principal = scope.get("state", {}).get("principal")
        if isinstance(principal, Principal) and self.user.per_minute > 0:
            key = f"{KEY_PREFIX}user:{principal.user_id}"
            checks.append(_Check("user", key, self.user))
        return checks

    async def _run(self, client: Any, checks: list[_Check]) -> tuple[bool, list[_State]]:
        if client is not self._client:  # one client per app: register the script once
            self._script, self._client = client.register_script(_GCRA), client
        args: list[int] = []
        for check in checks:
            args += [check.limit.interval_us, check.limit.burst]
        reply = await self._script(keys=[c.key for c in checks], args=args)
        states = [
            _State(c.policy, int(reply[1 + 2 * i]), int(reply[2 + 2 * i]))
            for i, c in enumerate(checks)
        ]
        return int(reply[0]) == 1, states

    async def _refuse(self, scope: Scope, send: Send, policy: str, spent: list[_State]) -> None:

        wait = max(1, *(_seconds(s.micros) for s in spent))
        names = ", ".join(s.policy for s in spent)
        headers = {
            "Retry-After": str(wait),
            "RateLimit-Policy": policy,
            "RateLimit": ", ".join(f'"{s.policy}";r=0;t={_seconds(s.micros)}' for s in spent),
        }
        detail = f"rate limit exceeded ({names}); retry after {wait} s"
        response = problem(Request(scope), status=429, detail=detail, headers=headers)
        await response(scope, no_body, send)

    def _failed(self, exc: BaseException) -> None:
        self._errors.inc()
        self._unreported += 1
        now = time.monotonic()
        if now - self._last_warning >= self.warning_interval_s:
            _log.warning(
                "Valkey unreachable, rate limiting is OFF (failing open; %d failed checks): %s: %s",
                self._unreported,
                type(exc).__name__,
                exc,
            )
            self._last_warning, self._unreported = now, 0
