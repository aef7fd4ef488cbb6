"""The deadline of the gRPC call being served, for every dependency call made on its behalf.

:class:`portico_common.interceptors.RequestIdInterceptor` records, for each call, when its
caller's deadline ends (on the monotonic clock); :func:`call_time_left` tells code that talks
to PostgreSQL (``portico_common.postgres.Deadline``) how much of it is left, so a database call
never outlives the caller who waits for it, whatever the service.
"""

from __future__ import annotations

import contextvars
import time

#: When the deadline of the call being served ends (``time.monotonic()``); None: no deadline.
CALL_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "portico_call_deadline", default=None
)


def call_time_left() -> float | None:
    """Seconds left before the current call's deadline (may be <= 0); None without one."""
    end = CALL_DEADLINE.get()
    return None if end is None else end - time.monotonic()
