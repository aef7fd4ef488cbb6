"""``python -m portico_users`` / ``portico-users``: serve until SIGTERM or SIGINT."""

from __future__ import annotations

from portico_common.cli import service_main
from portico_users.config import UsersSettings, get_settings


def main(argv: list[str] | None = None) -> None:
    """Read the settings from the environment, set up logging and serve."""
    service_main(
        "users",
        "Portico's users service: portico.users.v1.UserService over gRPC, with grpc.health.v1 "
        "health and server reflection. Stops gracefully on SIGTERM.",
        UsersSettings,
        get_settings,
        server="portico_users.server",
        argv=argv,
    )


if __name__ == "__main__":
    main()
