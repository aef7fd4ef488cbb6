"""``python -m portico_auth`` / ``portico-auth``: serve until SIGTERM or SIGINT.

``portico-auth keygen PATH`` writes a new Ed25519 signing key file (PEM PKCS#8, mode 0600) and
prints its kid; it refuses to overwrite an existing file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from portico_auth.config import AuthSettings, get_settings
from portico_common.cli import serve_service, service_parser

PROG = "portico-auth"


def _keygen(path: Path) -> None:
    from portico_auth.keys import generate_key_file

    try:
        kid = generate_key_file(path)
    except FileExistsError:
        sys.exit(f"portico-auth keygen: {path} exists; signing keys are rotated, not overwritten")
    sys.stdout.write(f"{kid}\n")


def _serve() -> Callable[[AuthSettings], Coroutine[Any, Any, None]]:
    from portico_auth.server import serve  # after logging is configured

    return serve


def main(argv: list[str] | None = None) -> None:
    """Read the settings from the environment, set up logging and serve (or run keygen)."""
    description = (
        "Portico's auth service: portico.auth.v1.AuthService over gRPC (sign-up, OAuth2 "
        "password-grant tokens, refresh rotation, logout, JWKS), with grpc.health.v1 health and "
        "server reflection. Stops gracefully on SIGTERM. Lists are JSON or comma-separated."
    )
    parser = service_parser(PROG, description, AuthSettings, "AUTH_")
    commands = parser.add_subparsers(dest="command")
    keygen = commands.add_parser(
        "keygen", help="write a new Ed25519 signing key file and print its kid"
    )
    keygen.add_argument("path", type=Path, help="where to write the PEM file (must not exist)")
    args = parser.parse_args(argv)
    if args.command == "keygen":
        _keygen(args.path)
        return
    from portico_auth.keys import KeyConfigError

    try:
        # The auth service owns the sessions: no session-store fail mode to read.
        serve_service(PROG, "auth", "AUTH_", get_settings, _serve, session_store=False)
    except KeyConfigError as exc:
        sys.exit(f"portico-auth: {exc}")


if __name__ == "__main__":
    main()
