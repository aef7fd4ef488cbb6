"""Logging of the auth service: :mod:`portico_common.logs` (JSON lines on stdout by default).

``request_id`` is the shared ContextVar the request-id interceptor sets for each call; every
record of the call carries it, with the trace and span ids of the current span.
"""

from __future__ import annotations

from portico_common.logs import REQUEST_ID, LogFormat
from portico_common.logs import configure_logging as _configure

#: Request id of the RPC being served in this task ("-" outside RPCs).
request_id = REQUEST_ID


def configure_logging(level: str, fmt: LogFormat = "json") -> None:
    """Install the process's log handler. Called once, by ``__main__``."""
    _configure(level=level, service="auth", fmt=fmt)
