"""``portico-gateway``: serve the REST gateway with uvicorn (settings from ``GATEWAY_*``)."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

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


def main(argv: list[str] | None = None) -> None:
    _parser().parse_args(argv)
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        server_header=False,
    )


if __name__ == "__main__":
    main()
