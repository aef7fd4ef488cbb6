"""Logging for every Portico process: JSON lines on stdout (or one readable line), never a secret.

Each record becomes one JSON object per line with ``timestamp`` (RFC 3339, UTC), ``level``,
``logger``, ``message``, ``service``, ``request_id`` (from :data:`REQUEST_ID`, set per request by
the gateway's middleware and the services' request-id interceptor), ``trace_id`` and ``span_id``
(of the span current when the record was made; empty outside one), ``exception`` when there is
one, and any ``extra={...}`` fields (the gateway's access log adds ``method``, ``route``,
``status``, ``duration_ms``). ``text`` is the same information on one line, for humans.

:class:`OutageLog` says once that a dependency a component can do without (Valkey, for the
users cache and the login throttle) stopped answering, and once that it answers again, instead
of one line per failed call.

Redaction (:func:`redact`) runs on the message, the exception text and every string extra, in
both formats: bearer/basic credentials, ``Authorization`` values, passwords in URLs/DSNs,
JWT-shaped strings and ``password=``/``token=``-style pairs are replaced by ``[REDACTED]``. It is
a safety net; code still must not log secrets on purpose.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextvars import ContextVar
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from opentelemetry import trace

#: Request id of the request/RPC being served in this task ("-" outside one).
REQUEST_ID: ContextVar[str] = ContextVar("portico_request_id", default="-")

LogFormat = Literal["json", "text"]

_MASK = "[REDACTED]"
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # `Authorization: <anything>` / authorization=... / ('authorization', '...')
    (re.compile(r"(?i)(authorization['\"]?\s*[:=,]\s*['\"]?)[^'\"\r\n]+"), rf"\1{_MASK}"),
    # `Bearer <token>`, `Basic <b64>` anywhere
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), rf"\1 {_MASK}"),
    # scheme://user:password@host (DSNs, Valkey URLs)
    (re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*:)[^@\s/'\"]+@"), rf"\1{_MASK}@"),
    # JWS compact serialization (header.payload.signature, header starts with eyJ = '{"')
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), _MASK),
    # password=..., "refresh_token": "...", secret: ...
    (
        re.compile(
            r"(?i)\b((?:password|passwd|secret|api_key|(?:access_|refresh_|id_)?token)['\"]?"
            r"\s*[=:]\s*['\"]?)[^'\"\s&,;}]+"
        ),
        rf"\1{_MASK}",
    ),
)

#: Text every rule above needs in what it replaces (compared lowercased): an ASCII line with none
#: of them has nothing to redact, which spares the usual access line five regex scans. (Outside
#: ASCII, case-insensitive matching is wider than ``str.lower``: such lines always get the scans.)
_MARKERS = ("authorization", "bearer", "basic", "://", "eyj", "passw", "secret", "api_key", "token")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}


def redact(text: str) -> str:
    """``text`` with credentials, tokens and URL passwords replaced by ``[REDACTED]``."""
    if text.isascii():
        lowered = text.lower()
        if not any(marker in lowered for marker in _MARKERS):
            return text
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def trace_ids() -> tuple[str, str]:
    """(trace id, span id) of the current span as lowercase hex, or ("", "") outside one."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return "", ""
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for its fields)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = trace_ids()
        timestamp = datetime.fromtimestamp(record.created, tz=UTC)
        entry: dict[str, Any] = {
            "timestamp": timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "service": self.service,
            "request_id": REQUEST_ID.get(),
            "trace_id": trace_id,
            "span_id": span_id,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """One readable line per record: time, level, logger, [request id trace id], message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s")
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """``logging``'s default time, with the seconds part formatted once per second."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        if self.default_msec_format:
            return self.default_msec_format % (self._stamp, record.msecs)
        return self._stamp

    def format(self, record: logging.LogRecord) -> str:
        trace_id, _ = trace_ids()
        rid = REQUEST_ID.get()
        record.request_id = f"{rid} {trace_id}" if trace_id else rid
        return redact(super().format(record))


def configure_logging(
    *, level: str, service: str, fmt: LogFormat = "json", stream: TextIO | None = None
) -> logging.Handler:
    """Send every record (ours, uvicorn's, grpc's, asyncpg's) to ``stream`` (stdout) in ``fmt``.

    Called once per process, by its ``__main__``. Returns the installed handler.
    """
    handler = logging.StreamHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = []
        uvicorn_logger.propagate = True
    return handler


@dataclass(slots=True)
class OutageLog:
    """The outage of an optional dependency, logged at its start and at its end only.

    ``down`` is a %-format for a WARNING, given the ``args`` of :meth:`failed`, then the
    exception's type name and text; ``up`` is logged at ``up_level`` on the first success
    after a failure.
    """

    log: logging.Logger
    _: KW_ONLY
    down: str
    up: str
    up_level: int = logging.INFO
    healthy: bool = True

    def failed(self, exc: BaseException, *args: object) -> None:
        """A call failed: log it if it is the first since the dependency last answered."""
        if self.healthy:
            self.log.warning(self.down, *args, type(exc).__name__, exc)
        self.healthy = False

    def succeeded(self) -> None:
        """A call succeeded: log the recovery if the dependency was down."""
        if not self.healthy:
            self.log.log(self.up_level, self.up)
        self.healthy = True
