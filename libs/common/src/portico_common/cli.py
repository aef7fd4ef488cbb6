"""What the gRPC services' ``__main__`` modules share.

* :func:`settings_help`: their settings, nested groups flattened, for ``--help``;
* :func:`load_settings`: read them, or exit with one line naming the variables to fix;
* :func:`setup_telemetry_or_exit`: ``OTEL_*`` (and ``PORTICO_SESSION_STORE_*``) read at start-up,
  so a typo stops the process with its name instead of a traceback from inside the server;
* :func:`new_event_loop`: the event loop they run on;
* :func:`service_parser` and :func:`serve_service`: a whole service ``__main__``, in two calls;
  :func:`service_main`: both in one, for a service whose command line is only ``--help``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings

from portico_common.config import get_session_store_settings, get_telemetry_settings
from portico_common.logs import LogFormat, configure_logging
from portico_common.telemetry import setup_telemetry

S = TypeVar("S")
SS = TypeVar("SS", bound="ServiceSettingsLike")


def settings_help(model: type[BaseModel], prefix: str) -> list[str]:
    """One line per environment variable of ``model``: its name and default."""
    lines: list[str] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines += settings_help(annotation, f"{prefix}{name.upper()}__")
            continue
        if info.is_required():
            default = "(required)"
        elif info.default_factory is not None:
            default = "(default: empty)"
        else:
            default = f"(default: {info.default})"
        lines.append(f"  {prefix + name.upper():<42} {default}")
    return lines


def load_settings(prog: str, prefix: str, load: Callable[[], S]) -> S:
    """``load()``, or exit naming every invalid or missing variable (see ``--help``)."""
    try:
        return load()
    except ValidationError as exc:
        names = ", ".join(
            prefix + "__".join(str(p).upper() for p in e["loc"]) for e in exc.errors()
        )
        if names == f"{prefix}POSTGRES":  # the whole group is missing: name what to set
            names = f"{prefix}POSTGRES__DSN"
        sys.exit(f"{prog}: invalid or missing settings: {names} (see --help)")


def setup_telemetry_or_exit(
    prog: str, service: str, *, instrument_asyncpg: bool = False, session_store: bool = True
) -> None:
    """Install tracing from ``OTEL_*`` and, with ``session_store``, check
    ``PORTICO_SESSION_STORE_*``; exit with the variable group's name when one is invalid."""
    try:
        setup_telemetry(
            get_telemetry_settings(), service_name=service, instrument_asyncpg=instrument_asyncpg
        )
    except ValueError as exc:  # pydantic's ValidationError is one too
        sys.exit(f"{prog}: invalid OTEL_* settings: {exc}")
    if not session_store:
        return
    try:
        get_session_store_settings()  # read at start-up, so a typo stops here, not mid-serve
    except ValueError as exc:
        sys.exit(f"{prog}: invalid PORTICO_SESSION_STORE_* settings: {exc}")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (Linux, macOS), else asyncio's own.

    grpc.aio runs on any asyncio loop; uvloop's callbacks, timers and sockets cost less CPU per
    call (the gateway gets it from uvicorn already).
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows; the images and the venv have it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class ServiceSettingsLike(Protocol):
    """What :func:`serve_service` reads of a service's settings."""

    @property
    def log_level(self) -> str: ...
    @property
    def log_format(self) -> LogFormat: ...


def service_parser(
    prog: str, description: str, settings: type[BaseModel], prefix: str
) -> argparse.ArgumentParser:
    """The ``--help`` of a service: what it serves, then every setting it reads."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Settings (environment variables; docs/configuration.md has their meaning):\n"
        + "\n".join(settings_help(settings, prefix)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def serve_service(
    prog: str,
    service: str,
    prefix: str,
    load: Callable[[], SS],
    serve: Callable[[], Callable[[SS], Coroutine[Any, Any, None]]],
    *,
    session_store: bool = True,
) -> None:
    """The process of a gRPC service: settings (or exit naming the bad ones), logging,
    telemetry, then ``serve()(settings)`` on the event loop until it stops.

    ``serve`` returns the service's ``serve`` function: it is imported only after logging is
    configured, so what the server modules log at import goes through it.
    """
    settings = load_settings(prog, prefix, load)
    configure_logging(level=settings.log_level, service=service, fmt=settings.log_format)
    setup_telemetry_or_exit(prog, service, instrument_asyncpg=True, session_store=session_store)
    run = serve()
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(run(settings))


def service_main(
    service: str,
    description: str,
    settings: type[BaseSettings],
    load: Callable[[], SS],
    *,
    server: str,
    argv: list[str] | None = None,
) -> None:
    """The ``main`` of the gRPC service ``service`` (``portico-<service>``): ``--help`` says
    ``description`` and every setting of ``settings`` (under its ``env_prefix``), then
    :func:`serve_service` runs ``serve`` of the module ``server``, imported once logging is
    configured."""
    prog = f"portico-{service}"
    prefix = settings.model_config.get("env_prefix", "")
    service_parser(prog, description, settings, prefix).parse_args(argv)

    def serve() -> Callable[[SS], Coroutine[Any, Any, None]]:
        run: Callable[[SS], Coroutine[Any, Any, None]] = importlib.import_module(server).serve
        return run

    serve_service(prog, service, prefix, load, serve)
