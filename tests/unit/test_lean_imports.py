"""Each process imports only what it serves with (issue 13: start-up and idle memory).

Every module a process imports stays resident for its whole life: its code objects, its
module dict, and for an extension its shared library. ``docs/benchmarks.md`` ("Start-up and
idle memory") has what each import costs. These tests start a fresh interpreter per process,
import what that process imports before it serves (its ``__main__``, its composition root, the
telemetry set-up with the production OTLP endpoint; for the gateway, the app built from its
default settings) and fail when one of the listed modules, which that process never needs, was
pulled in: by a convenience import, a helper moved into a shared module, a new dependency's
``__init__``. No timing: only ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

#: The web stack, which only the gateway serves with.
WEB = ("fastapi", "starlette", "uvicorn", "httpx", "anyio", "h11", "fastapi_offline")
#: Password hashing: the auth service only.
PASSWORDS = ("argon2",)
#: Database code: the gRPC services only (the gateway has no database).
DATABASE = ("asyncpg", "opentelemetry.instrumentation.asyncpg", "portico_common.postgres")
#: protovalidate's engine: the services validate requests, the gateway hands them on.
VALIDATION = ("protovalidate",)
#: Tools that build things at development time, never at run time.
TOOLS = ("grpc_tools.protoc", "mypy_protobuf", "jsonschema", "yaml_rs", "hypothesis", "pytest")

#: What each process must not import: (modules imported first, modules forbidden).
PROCESSES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "users": (("portico_users.__main__", "portico_users.server"), WEB + PASSWORDS + TOOLS),
    "auth": (("portico_auth.__main__", "portico_auth.server"), WEB + TOOLS),
    "audit": (("portico_audit.__main__", "portico_audit.server"), WEB + PASSWORDS + TOOLS),
    "gateway": (("portico_gateway.__main__",), PASSWORDS + DATABASE + VALIDATION + TOOLS),
}

_PROBE = textwrap.dedent(
    """
    import importlib, json, sys
    from portico_common.config import get_telemetry_settings
    from portico_common.telemetry import setup_telemetry
    modules, service = json.loads(sys.argv[1])
    for name in modules:
        importlib.import_module(name)
    setup_telemetry(
        get_telemetry_settings(), service_name=service, instrument_asyncpg=service != "gateway"
    )
    if service == "gateway":
        from portico_gateway.app import create_app
        from portico_gateway.config import GatewaySettings
        create_app(GatewaySettings())
    print(json.dumps(sorted(sys.modules)))
    """
)


def _imported(modules: tuple[str, ...], service: str) -> set[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GATEWAY_"))}
    # As in the cluster: an OTLP endpoint (nothing is sent: no span is recorded here).
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:4317"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps([list(modules), service])],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("service", sorted(PROCESSES))
def test_a_process_does_not_import_what_it_never_serves_with(service: str) -> None:
    modules, forbidden = PROCESSES[service]
    imported = _imported(modules, service)
    pulled_in = sorted(
        name
        for name in forbidden
        if name in imported or any(m.startswith(name + ".") for m in imported)
    )
    assert not pulled_in, f"{service} imports {pulled_in}"


def test_the_probe_sees_what_a_process_imports() -> None:
    """The check can fail: the users service does import its own needs (the database driver,
    the validation engine), and the gateway the web stack."""
    users = _imported(PROCESSES["users"][0], "users")
    gateway = _imported(PROCESSES["gateway"][0], "gateway")
    assert {"asyncpg", "protovalidate", "opentelemetry.instrumentation.asyncpg"} <= users
    assert {"fastapi", "uvicorn", "starlette"} <= gateway
