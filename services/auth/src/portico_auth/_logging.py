"""Plain-text logging to stderr, one line per record, with the request id of the current RPC.

The request id lives in a ``ContextVar`` that the request-id interceptor sets for each call; the
handler's filter copies it onto every record, so any logger (ours, asyncpg's, grpc's) shows it.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

#: Request id of the RPC being served in this task ("-" outside RPCs).
request_id: ContextVar[str] = ContextVar("portico_auth_request_id", default="-")

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` from the context of the task that logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure_logging(level: str) -> None:
    """Send every record to stderr in one readable line. Called once, by ``__main__``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(_FORMAT, defaults={"request_id": "-"}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
