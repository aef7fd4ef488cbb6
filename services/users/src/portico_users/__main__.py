"""``python -m portico_users`` / ``portico-users``: serve until SIGTERM or SIGINT."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from portico_common.cli import serve_service, service_parser
from portico_users.config import UsersSettings, get_settings

PROG = "portico-users"


def _serve() -> Callable[[UsersSettings], Coroutine[Any, Any, None]]:
    from portico_users.server import serve  # after logging is configured

    return serve


def main(argv: list[str] | None = None) -> None:
    """Read the settings from the environment, set up logging and serve."""
    description = (
        "Portico's users service: portico.users.v1.UserService over gRPC, with "
        "grpc.health.v1 health and server reflection. Stops gracefully on SIGTERM."
    )
    service_parser(PROG, description, UsersSettings, "USERS_").parse_args(argv)
    serve_service(PROG, "users", "USERS_", get_settings, _serve)


if __name__ == "__main__":
    main()
