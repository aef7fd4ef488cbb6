"""Timeouts for the integration tier's own clients and servers: a slow, busy machine's, not prod's.

The product's Valkey timeouts are tight by design (0.25-0.5 s: a session check fails fast and
the caller gets a clear 503 instead of waiting). In this tier every server, the gateway and the
test client share one event loop in one process: on a loaded CI machine that loop can be busy
for longer than 0.25 s, and a connect that succeeded at the socket level then "times out"
(seen: `session check failed: TimeoutError: Timeout connecting to server` turned into
UNAVAILABLE for a sign-up). Tests of the behaviour under a failing Valkey use a closed port or
a killed server, which fail at once whatever the timeout; tests of the timeouts themselves set
theirs explicitly.
"""

from __future__ import annotations

#: Socket and connect timeout of every Valkey client the tier's servers and gateways build.
VALKEY_TIMEOUT_S = 5.0
