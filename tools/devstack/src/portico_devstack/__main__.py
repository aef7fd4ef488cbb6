"""``portico-dev``: run Portico locally (what ``make run`` calls)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from portico_devstack.config import DevSettings
from portico_devstack.launcher import run


def _parser(defaults: DevSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portico-dev",
        description=(
            "Start Portico on this machine: embedded PostgreSQL and Valkey (unless DATABASE_URL / "
            "VALKEY_URL point at real ones), migrations, the users and auth services and the "
            "gateway, with their logs. Ctrl-C stops everything; data (and the dev signing key) "
            "stay in --data-dir."
        ),
        epilog="Every option also reads an environment variable: PORTICO_DEV_<OPTION>, "
        "e.g. PORTICO_DEV_GATEWAY_PORT=8080. Services read their own USERS_* / GATEWAY_* settings.",
    )
    parser.add_argument("--data-dir", type=Path, default=defaults.data_dir)
    parser.add_argument("--host", default=defaults.host, help="bind address (default: loopback)")
    parser.add_argument("--gateway-port", type=int, default=defaults.gateway_port)
    parser.add_argument("--users-port", type=int, default=defaults.users_port)
    parser.add_argument("--auth-port", type=int, default=defaults.auth_port)
    parser.add_argument("--audit-port", type=int, default=defaults.audit_port)
    parser.add_argument("--valkey-port", type=int, default=defaults.valkey_port)
    parser.add_argument(
        "--observe",
        action=argparse.BooleanOptionalAction,
        default=defaults.observe,
        help="also run a local Prometheus scraping every process, with the repo's rules "
        "(Debian's `prometheus`; skipped with a message when it is not installed)",
    )
    parser.add_argument("--prometheus-port", type=int, default=defaults.prometheus_port)
    parser.add_argument(
        "--images",
        default=defaults.images,
        metavar="REFERENCE",
        help="run the migrations, services and gateway from their container images (podman) "
        "instead of this virtualenv; REFERENCE has {name} for gateway|users|auth|audit|migrations, "
        "e.g. localhost/portico/{name}:local (built by `make images`)",
    )
    parser.add_argument("--ready-timeout-s", type=float, default=defaults.ready_timeout_s)
    return parser


def main(argv: list[str] | None = None) -> int:
    defaults = DevSettings()
    args = _parser(defaults).parse_args(argv)
    settings = defaults.model_copy(update=vars(args))
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
