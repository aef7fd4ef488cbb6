"""Who may tell a service the client's address: the forwarder key.

The gateway sends the HTTP client's address to the auth service as ``x-forwarded-for`` metadata
(the auth service throttles logins and sign-ups per client address). Any other gRPC caller could
send that metadata too, and move its throttle bucket at will. So the gateway proves that it is
the gateway with a shared secret, :data:`FORWARDER_HEADER`, and the auth service believes
``x-forwarded-for`` only on a call that carries one of its accepted keys
(:func:`trusted_forwarder`); from any other caller the address is the gRPC peer's.

The service accepts a *list* of keys so that a key can be rotated without downtime: add the new
key to the list, switch the gateway to it, then drop the old one (SECURITY.md). Keys are
compared in constant time (``hmac.compare_digest``), and every accepted key is compared, so the
time taken says nothing about which key (or how much of one) matched. The key is never logged,
and the auth service passes no incoming metadata on to anyone.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import SecretStr

#: The metadata entry the gateway sends its forwarder key in (to the auth service only).
FORWARDER_HEADER = "x-portico-forwarder"
#: The metadata entry that names the client's address (the gateway's entry last).
FORWARDED_FOR = "x-forwarded-for"
#: Shortest accepted key: 32 characters (``secrets.token_urlsafe(32)`` gives 43).
MIN_KEY_CHARS = 32


def check_key(key: SecretStr) -> SecretStr:
    """``key`` when it is long enough to be a secret (a pydantic validator's body)."""
    if len(key.get_secret_value()) < MIN_KEY_CHARS:
        raise ValueError(f"a forwarder key has at least {MIN_KEY_CHARS} characters")
    return key


def trusted_forwarder(
    metadata: Iterable[tuple[str, Any]] | None, keys: Sequence[SecretStr]
) -> bool:
    """Whether ``metadata`` carries one of ``keys`` as :data:`FORWARDER_HEADER`.

    No keys: nobody is trusted. A second forwarder entry, or a binary value, is never trusted.
    """
    presented = [value for key, value in metadata or () if key == FORWARDER_HEADER]
    if len(presented) != 1 or not isinstance(presented[0], str) or not keys:
        return False
    offered = presented[0].encode("utf-8", "surrogateescape")
    # every key compared (no short-circuit), each in constant time
    matches = [hmac.compare_digest(offered, k.get_secret_value().encode("utf-8")) for k in keys]
    return any(matches)
