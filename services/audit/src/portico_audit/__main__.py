"""``python -m portico_audit`` / ``portico-audit``: serve until SIGTERM or SIGINT."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from portico_audit.config import AuditSettings, get_settings
from portico_common.cli import serve_service, service_parser

PROG = "portico-audit"


def _serve() -> Callable[[AuditSettings], Coroutine[Any, Any, None]]:
    from portico_audit.server import serve  # after logging is configured

    return serve


def main(argv: list[str] | None = None) -> None:
    """Read the settings from the environment, set up logging and serve."""
    description = (
        "Portico's audit service: consumes the event stream and serves "
        "portico.audit.v1.AuditService over gRPC, with grpc.health.v1 health and server "
        "reflection. Stops gracefully on SIGTERM."
    )
    service_parser(PROG, description, AuditSettings, "AUDIT_").parse_args(argv)
    serve_service(PROG, "audit", "AUDIT_", get_settings, _serve)


if __name__ == "__main__":
    main()
