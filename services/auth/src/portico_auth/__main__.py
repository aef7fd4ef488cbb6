"""``python -m portico_auth`` / ``portico-auth``: serve until SIGTERM or SIGINT.

``portico-auth keygen PATH`` writes a new Ed25519 signing key file (PEM PKCS#8, mode 0600) and
prints its kid; it refuses to overwrite an existing file.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from pydantic import BaseModel, ValidationError

from portico_auth._logging import configure_logging
from portico_auth.config import AuthSettings, get_settings
from portico_common.config import get_telemetry_settings
from portico_common.telemetry import setup_telemetry


def _settings_help(model: type[BaseModel], prefix: str) -> list[str]:
    lines: list[str] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines += _settings_help(annotation, f"{prefix}{name.upper()}__")
        else:
            if info.is_required():
                default = "(required)"
            elif info.default_factory is not None:
                default = "(default: empty)"
            else:
                default = f"(default: {info.default})"
            lines.append(f"  {prefix + name.upper():<42} {default}")
    return lines


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
        prog="portico-auth",
        description="Portico's auth service: portico.auth.v1.AuthService over gRPC (sign-up, "
        "OAuth2 password-grant tokens, refresh rotation, logout, JWKS), with grpc.health.v1 "
        "health and server reflection. Stops gracefully on SIGTERM.",
        epilog="Settings (environment variables; lists are JSON or comma-separated):\n"
        + "\n".join(_settings_help(AuthSettings, "AUTH_")),
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
    try:
        settings = get_settings()
    except ValidationError as exc:
        names = ", ".join(
            "AUTH_" + "__".join(str(p).upper() for p in e["loc"]) for e in exc.errors()
        )
        if names == "AUTH_POSTGRES":  # the whole group is missing: name what to set
            names = "AUTH_POSTGRES__DSN"
        sys.exit(f"portico-auth: invalid or missing settings: {names} (see --help)")
    configure_logging(settings.log_level, settings.log_format)
    try:
        setup_telemetry(get_telemetry_settings(), service_name="auth", instrument_asyncpg=True)
    except ValueError as exc:  # pydantic's ValidationError is one too
        sys.exit(f"portico-auth: invalid OTEL_* settings: {exc}")
    from portico_auth.keys import KeyConfigError
    from portico_auth.server import serve  # after logging is configured

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(serve(settings))
    except KeyConfigError as exc:
        sys.exit(f"portico-auth: {exc}")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (Linux, macOS), else asyncio's own.

    grpc.aio runs on any asyncio loop; uvloop's callbacks, timers and sockets cost less CPU per
    call (as in the users and audit services; the gateway gets it from uvicorn already).
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows; the image and the venv have it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


if __name__ == "__main__":
    main()
