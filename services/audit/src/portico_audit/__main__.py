"""``python -m portico_audit`` / ``portico-audit``: serve until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import sys

from pydantic import BaseModel, ValidationError

from portico_audit._logging import configure_logging
from portico_audit.config import AuditSettings, get_settings
from portico_common.config import get_session_store_settings, get_telemetry_settings
from portico_common.telemetry import setup_telemetry


def _settings_help(model: type[BaseModel], prefix: str) -> list[str]:
    lines: list[str] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines += _settings_help(annotation, f"{prefix}{name.upper()}__")
        else:
            default = "(required)" if info.is_required() else f"(default: {info.default})"
            lines.append(f"  {prefix + name.upper():<42} {default}")
    return lines


def main(argv: list[str] | None = None) -> None:
    """Read the settings from the environment, set up logging and serve."""
    argparse.ArgumentParser(
        prog="portico-audit",
        description="Portico's audit service: consumes the event stream and serves "
        "portico.audit.v1.AuditService over gRPC, with grpc.health.v1 health and server "
        "reflection. Stops gracefully on SIGTERM.",
        epilog="Settings (environment variables; README has their meaning):\n"
        + "\n".join(_settings_help(AuditSettings, "AUDIT_")),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:
        names = ", ".join(
            "AUDIT_" + "__".join(str(p).upper() for p in e["loc"]) for e in exc.errors()
        )
        if names == "AUDIT_POSTGRES":  # the whole group is missing: name what to set
            names = "AUDIT_POSTGRES__DSN"
        sys.exit(f"portico-audit: invalid or missing settings: {names} (see --help)")
    configure_logging(settings.log_level, settings.log_format)
    try:
        setup_telemetry(get_telemetry_settings(), service_name="audit", instrument_asyncpg=True)
    except ValueError as exc:  # pydantic's ValidationError is one too
        sys.exit(f"portico-audit: invalid OTEL_* settings: {exc}")
    try:
        get_session_store_settings()  # read at start-up, so a typo stops here, not mid-serve
    except ValueError as exc:
        sys.exit(f"portico-audit: invalid PORTICO_SESSION_STORE_* settings: {exc}")
    from portico_audit.server import serve  # after logging is configured

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(serve(settings))


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (Linux, macOS), else asyncio's own.

    grpc.aio runs on any asyncio loop; uvloop's callbacks, timers and sockets cost less CPU per
    call (the gateway gets it from uvicorn already).
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows; the image and the venv have it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


if __name__ == "__main__":
    main()
