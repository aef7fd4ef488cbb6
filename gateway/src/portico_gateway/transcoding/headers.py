"""Request headers the transcoder reads: ``If-Match``, ``If-None-Match`` and the client's deadline.

* ``If-Match: "x"``, ``W/"x"`` or a bare ``x`` is the etag ``x``; ``*`` (or no header) means no
  condition. Of a list, the first tag counts.
* ``If-None-Match`` (of a cacheable read) holds when any tag of its list names the resource's
  etag, compared weakly as RFC 9110 section 13.1.2 requires (``W/"x"`` and ``"x"`` both name
  ``x``), or is ``*``.
* ``grpc-timeout`` (gRPC's format: 1 to 8 digits and a unit ``H M S m u n``) and
  ``Request-Timeout`` (positive seconds, a float) can only shorten the configured deadline;
  malformed values are 400s.
"""

from __future__ import annotations

import math
import re

from portico_gateway.errors import RequestError

_GRPC_TIMEOUT = re.compile(r"(\d{1,8})([HMSmun])")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_if_match(value: str | None) -> str | None:
    """The etag of an ``If-Match`` header (``"x"``, ``W/"x"`` or ``x``); None for none or ``*``."""
    if value is None or value.strip() in ("", "*"):
        return None
    return _opaque(value.split(",", 1)[0])


def _opaque(tag: str) -> str:
    tag = tag.strip().removeprefix("W/")
    if len(tag) >= 2 and tag[0] == tag[-1] == '"':
        tag = tag[1:-1]
    return tag


def none_match(value: str | None, etag: str) -> bool:
    """Whether ``If-None-Match: value`` names the current ``etag`` (so the answer is 304)."""
    if value is None or not etag:
        return False
    if value.strip() == "*":
        return True
    return any(_opaque(tag) == etag for tag in value.split(","))


def parse_timeout(grpc_timeout: str | None, request_timeout: str | None) -> float | None:
    """The client's deadline in seconds, from ``grpc-timeout`` or ``Request-Timeout``."""
    limits: list[float] = []
    if grpc_timeout is not None:
        match = _GRPC_TIMEOUT.fullmatch(grpc_timeout.strip())
        if match is None or int(match.group(1)) == 0:  # the gRPC spec: a positive integer
            raise RequestError(400, "malformed grpc-timeout header (e.g. 500m, 2S)")
        limits.append(int(match.group(1)) * _UNITS[match.group(2)])
    if request_timeout is not None:
        try:
            seconds = float(request_timeout)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds <= 0:
            raise RequestError(400, "malformed Request-Timeout header (positive seconds)")
        limits.append(seconds)
    return min(limits) if limits else None
