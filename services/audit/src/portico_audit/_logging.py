"""Logging of the audit service: :mod:`portico_common.logs` (JSON lines on stdout by default)."""

from __future__ import annotations

from portico_common.logs import LogFormat
from portico_common.logs import configure_logging as _configure


def configure_logging(level: str, fmt: LogFormat = "json") -> None:
    """Install the process's log handler. Called once, by ``__main__``."""
    _configure(level=level, service="audit", fmt=fmt)
