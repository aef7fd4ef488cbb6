"""``python -m portico_users`` / ``portico-users``: serve until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio

from portico_common.cli import (
    load_settings,
    new_event_loop,
    settings_help,
    setup_telemetry_or_exit,
)
from portico_common.logs import configure_logging
from portico_users.config import UsersSettings, get_settings

PROG = "portico-users"


def main(argv: list[str] | None = None) -> None:
    """Read the settings from the environment, set up logging and serve."""
    argparse.ArgumentParser(
        prog=PROG,
        description="Portico's users service: portico.users.v1.UserService over gRPC, with "
        "grpc.health.v1 health and server reflection. Stops gracefully on SIGTERM.",
        epilog="Settings (environment variables; README has their meaning):\n"
        + "\n".join(settings_help(UsersSettings, "USERS_")),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args(argv)
    settings = load_settings(PROG, "USERS_", get_settings)
    configure_logging(level=settings.log_level, service="users", fmt=settings.log_format)
    setup_telemetry_or_exit(PROG, "users", instrument_asyncpg=True)
    from portico_users.server import serve  # after logging is configured

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(serve(settings))


if __name__ == "__main__":
    main()
