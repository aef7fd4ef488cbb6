"""``python -m portico_audit`` / ``portico-audit``: serve until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio

from portico_audit.config import AuditSettings, get_settings
from portico_common.cli import (
    load_settings,
    new_event_loop,
    settings_help,
    setup_telemetry_or_exit,
)
from portico_common.logs import configure_logging

PROG = "portico-audit"


def main(argv: list[str] | None = None) -> None:
    """Read the settings from the environment, set up logging and serve."""
    argparse.ArgumentParser(
        prog=PROG,
        description="Portico's audit service: consumes the event stream and serves "
        "portico.audit.v1.AuditService over gRPC, with grpc.health.v1 health and server "
        "reflection. Stops gracefully on SIGTERM.",
        epilog="Settings (environment variables; README has their meaning):\n"
        + "\n".join(settings_help(AuditSettings, "AUDIT_")),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args(argv)
    settings = load_settings(PROG, "AUDIT_", get_settings)
    configure_logging(level=settings.log_level, service="audit", fmt=settings.log_format)
    setup_telemetry_or_exit(PROG, "audit", instrument_asyncpg=True)
    from portico_audit.server import serve  # after logging is configured

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(serve(settings))


if __name__ == "__main__":
    main()
