"""The hostile-input suite: what an attacker sends, by attack class, against real servers.

Each sub-package is one class of attack (``headers/``, ``strings/``, ``tokens/`` …); each test
sends the hostile input to the real gateway (in-process ASGI, or a real process where the
transport matters) and, where the RPC is reachable directly, to the real gRPC server, and
checks for a clear 4xx (problem+json; a gRPC status with details) at once: never a 5xx, never a
hang. The servers are the security suite's (``tests/integration/security/conftest.py``).
"""

from __future__ import annotations

from tests.integration.security.conftest import (  # noqa: F401 (fixtures, found by name)
    api,
    audit,
    audit_channel,
    auth,
    auth_channel,
    auth_server,
    people,
    settings_overrides,
    users,
    users_channel,
    valkey,
)
