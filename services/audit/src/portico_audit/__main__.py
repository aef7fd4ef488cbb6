"""``python -m portico_audit`` / ``portico-audit``: serve until SIGTERM or SIGINT."""

from __future__ import annotations

from portico_audit.config import AuditSettings, get_settings
from portico_common.cli import service_main


def main(argv: list[str] | None = None) -> None:
    """Read the settings from the environment, set up logging and serve."""
    service_main(
        "audit",
        "Portico's audit service: consumes the event stream and serves "
        "portico.audit.v1.AuditService over gRPC, with grpc.health.v1 health and server "
        "reflection. Stops gracefully on SIGTERM.",
        AuditSettings,
        get_settings,
        server="portico_audit.server",
        argv=argv,
    )


if __name__ == "__main__":
    main()
