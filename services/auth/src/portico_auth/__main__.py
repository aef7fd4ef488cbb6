"""``python -m portico_auth`` / ``portico-auth``: serve until SIGTERM or SIGINT.

``portico-auth keygen PATH`` writes a new Ed25519 signing key file (PEM PKCS#8, mode 0600) and
prints its kid; it refuses to overwrite an existing file.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from portico_auth.config import AuthSettings, get_settings
from portico_common.cli import (
    load_settings,
    new_event_loop,
    settings_help,
    setup_telemetry_or_exit,
)
from portico_common.logs import configure_logging

PROG = "portico-auth"


def _keygen(path: Path) -> None:
    from portico_auth.keys import generate_key_file

    try:
        kid = generate_key_file(path)
    except FileExistsError:
        sys.exit(f"portico-auth keygen: {path} exists; signing keys are rotated, not overwritten")
    sys.stdout.write(f"{kid}\n")


def main(argv: list[str] | None = None) -> None:
    """Read the settings from the environment, set up logging and serve (or run keygen)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Portico's auth service: portico.auth.v1.AuthService over gRPC (sign-up, "
        "OAuth2 password-grant tokens, refresh rotation, logout, JWKS), with grpc.health.v1 "
        "health and server reflection. Stops gracefully on SIGTERM.",
        epilog="Settings (environment variables; lists are JSON or comma-separated):\n"
        + "\n".join(settings_help(AuthSettings, "AUTH_")),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command")
    keygen = commands.add_parser(
        "keygen", help="write a new Ed25519 signing key file and print its kid"
    )
    keygen.add_argument("path", type=Path, help="where to write the PEM file (must not exist)")
    args = parser.parse_args(argv)
    if args.command == "keygen":
        _keygen(args.path)
        return
    settings = load_settings(PROG, "AUTH_", get_settings)
    configure_logging(level=settings.log_level, service="auth", fmt=settings.log_format)
    # The auth service owns the sessions: no session-store fail mode to read.
    setup_telemetry_or_exit(PROG, "auth", instrument_asyncpg=True, session_store=False)
    from portico_auth.keys import KeyConfigError
    from portico_auth.server import serve  # after logging is configured

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(serve(settings))
    except KeyConfigError as exc:
        sys.exit(f"portico-auth: {exc}")


if __name__ == "__main__":
    main()
