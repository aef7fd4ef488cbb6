"""``portico-gateway``: run the REST gateway with uvicorn (settings: ``GATEWAY_*``, ``OTEL_*``)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import signal
import socket
import sys
from collections.abc import Iterator

import uvicorn

from portico_common.config import get_telemetry_settings
from portico_common.logs import configure_logging
from portico_common.telemetry import setup_telemetry
from portico_gateway.app import create_app
from portico_gateway.config import GatewaySettings, get_settings


def _parser() -> argparse.ArgumentParser:
    fields = GatewaySettings.model_fields
    settings_help = "\n".join(
        f"  GATEWAY_{name.upper():<22} {info.description or ''} (default: {info.default})"
        for name, info in fields.items()
    )
    return argparse.ArgumentParser(
        prog="portico-gateway",
        description="Portico's REST gateway: FastAPI in front of the gRPC services.",
        epilog="Settings (environment variables):\n" + settings_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


class _Server(uvicorn.Server):
    """uvicorn, minus re-raising SIGTERM after a graceful shutdown, plus ``gc.freeze()``.

    uvicorn re-raises the signal it caught once it has drained, so the process ends "killed by
    SIGTERM" (-15). A drained gateway has stopped cleanly: it exits 0, as the launcher and
    Kubernetes expect. A second signal still forces the exit (uvicorn's ``handle_exit``).

    Once started (lifespan done, sockets bound), everything allocated so far lives as long as
    the process: :func:`gc.freeze` moves it out of the collector's sight, so the full
    collections that per-request garbage triggers stop walking FastAPI's, pydantic's and
    protobuf's start-up objects again and again.
    """

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            gc.collect()
            gc.freeze()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> None:
    _parser().parse_args(argv)
    settings = get_settings()
    configure_logging(level=settings.log_level, service="gateway", fmt=settings.log_format)
    try:
        setup_telemetry(get_telemetry_settings(), service_name="gateway")
    except ValueError as exc:  # pydantic's ValidationError is one too
        sys.exit(f"portico-gateway: invalid OTEL_* settings: {exc}")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep ours: JSON lines (or text) on stdout, secrets redacted
        access_log=False,  # the gateway logs one access line per request itself
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),  # uvicorn takes an int
        server_header=False,
        # The client address behind a trusted proxy (ingress, Istio sidecar at 127.0.0.6): what
        # per-address rate limits and login throttling key on.
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    _Server(config).run()


if __name__ == "__main__":
    main()
