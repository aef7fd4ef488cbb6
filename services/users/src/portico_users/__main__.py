"""``python -m portico_users`` / ``portico-users``: serve until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio

from portico_users._logging import configure_logging
from portico_users.config import get_settings
from portico_users.server import serve


def main() -> None:
    """Read the settings from the environment, set up logging and serve."""
    settings = get_settings()
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
