"""Timeouts for the integration tier's own clients and servers: a slow, busy machine's, not prod's.

The product's Valkey timeouts are tight by design (0.25-0.5 s: a session check fails fast and
the caller gets a clear 503 instead of waiting). In this tier every server, the gateway and the
test client share one event loop in one process: on a loaded CI machine that loop can be busy
for longer than 0.25 s, and a connect that succeeded at the socket level then "times out"
(seen: `session check failed: TimeoutError: Timeout connecting to server` turned into
UNAVAILABLE for a sign-up). Tests of the behaviour under a failing Valkey use a closed port or
a killed server, which fail at once whatever the timeout; tests of the timeouts themselves set
theirs explicitly. The same holds for the other timeouts below.
"""

from __future__ import annotations

#: Socket and connect timeout of every Valkey client the tier's servers and gateways build.
VALKEY_TIMEOUT_S = 5.0
#: Opening one PostgreSQL connection (the pool's, the health probe's). The product's 3 s default
#: is for a network; here, the loop that must answer the server's handshake may be busy.
POSTGRES_CONNECT_TIMEOUT_S = 10.0
#: The auth service's call to the users service during a sign-up (seen in CI: CreateUser ran
#: out of the 2 s the tier used to give it while three sign-ups hashed passwords at once).
USERS_CALL_TIMEOUT_S = 15.0
