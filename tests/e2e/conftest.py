"""End-to-end tier: the stack ``make run`` starts, as real processes on loopback.

By default each session starts ``portico-dev`` (the launcher behind ``make run``) on free ports
with a data folder of its own, and stops it with SIGTERM afterwards, checking it exits 0. With
``PORTICO_E2E_BASE_URL`` (and ``PORTICO_E2E_GRPC_TARGET``) the tests run against a deployed stack
instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    base_url: str
    grpc_target: str
    process: subprocess.Popen[str] | None = None
    auth_target: str = ""
    output: list[str] = field(default_factory=list)
    pump: threading.Thread | None = None

    def children(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self, timeout_s: float = 40.0) -> int:
        """SIGTERM the launcher (as a process manager stops it); return its exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def interrupt(self, timeout_s: float = 40.0) -> int:
        """Ctrl-C as a terminal sends it: SIGINT to the launcher's whole process group."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGINT)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float) -> int:
        """Wait for the launcher to exit on its own; return its exit code."""
        assert self.process is not None
        code = self.process.wait(timeout=timeout_s)
        if self.pump is not None:
            self.pump.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


def start_stack(
    data_dir: Path, *, timeout_s: float = 90.0, extra_env: dict[str, str] | None = None
) -> Stack:
    """Run ``portico-dev`` on free ports (plus ``extra_env``); return once its banner is printed.

    The banner ends with "Ctrl-C stops everything": waiting for "ready in", its first line, let
    a test read the output before the lines after it (the Prometheus URL) had arrived.
    """
    gateway_port, users_port, auth_port = free_port(), free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("USERS_", "AUTH_", "AUDIT_", "GATEWAY_", "PORTICO_DEV_"))
        and k not in ("DATABASE_URL", "VALKEY_URL")
    }
    env |= {
        "PORTICO_DEV_DATA_DIR": str(data_dir),
        "PORTICO_DEV_GATEWAY_PORT": str(gateway_port),
        "PORTICO_DEV_USERS_PORT": str(users_port),
        "PORTICO_DEV_AUTH_PORT": str(auth_port),
        "PORTICO_DEV_USERS_METRICS_PORT": str(free_port()),
        "PORTICO_DEV_AUTH_METRICS_PORT": str(free_port()),
        "PORTICO_DEV_AUDIT_PORT": str(free_port()),
        "PORTICO_DEV_AUDIT_METRICS_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
        # Every test here calls from 127.0.0.1, schemathesis by the thousand: the gateway's
        # limits are proven by the integration tier, so they are off here.
        "GATEWAY_RATE_LIMIT_ADDRESS_PER_MINUTE": "0",
        "GATEWAY_RATE_LIMIT_USER_PER_MINUTE": "0",
        # schemathesis sends hundreds of logins and sign-ups from 127.0.0.1; the throttles are
        # proven by the integration tier, and the documented walkthroughs that log in run after it.
        "AUTH_THROTTLE__ADDRESS_LIMIT": "1000000",
        "AUTH_THROTTLE__SIGNUP_ADDRESS_LIMIT": "1000000",
        "AUTH_THROTTLE__ACCOUNT_CLIENT_LIMIT": "1000000",
        "AUTH_THROTTLE__ACCOUNT_LIMIT": "1000000",
    }
    env |= extra_env or {}
    process = subprocess.Popen(
        [sys.executable, "-m", "portico_devstack"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A process group of its own, like a shell's foreground job: Stack.interrupt sends
        # SIGINT to all of it, as a terminal's Ctrl-C does, and never to pytest.
        start_new_session=True,
    )
    stack = Stack(
        f"http://127.0.0.1:{gateway_port}",
        f"127.0.0.1:{users_port}",
        process,
        auth_target=f"127.0.0.1:{auth_port}",
    )

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            stack.output.append(line.rstrip("\n"))

    stack.pump = threading.Thread(target=pump, daemon=True)
    stack.pump.start()
    deadline = time.monotonic() + timeout_s
    while not any(line.endswith("Ctrl-C stops everything") for line in stack.output):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            stack.wait(10)
            raise RuntimeError("portico-dev did not start:\n" + "\n".join(stack.output))
        time.sleep(0.05)
    return stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if base_url := os.environ.get("PORTICO_E2E_BASE_URL"):
        yield Stack(
            base_url.rstrip("/"),
            os.environ.get("PORTICO_E2E_GRPC_TARGET", ""),
            auth_target=os.environ.get("PORTICO_E2E_AUTH_TARGET", ""),
        )
        return
    started = start_stack(tmp_path_factory.mktemp("stack") / ".data")
    try:
        yield started
    finally:
        if started.process is not None and started.process.poll() is None:
            code = started.stop()
            assert code == 0, "\n".join(started.output)


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    """A client of the stack's gateway that sends the dev admin's access token."""
    headers = {"Authorization": f"Bearer {admin_token(stack)}"}
    with httpx.Client(base_url=stack.base_url, timeout=10, headers=headers) as client:
        yield client


def admin_token(stack: Stack) -> str:
    """An access token of the dev admin (``admin@example.com``), signing it up if need be."""
    password = "dev admin password"
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        client.post(
            "/v1/auth/signup",
            json={
                "email": "admin@example.com",
                "display_name": "Admin",
                "password": password,
                "idempotency_key": str(uuid.uuid4()),
            },
        )  # 201, or 409 when an earlier test signed it up
        reply = client.post(
            "/v1/auth/token",
            data={"grant_type": "password", "username": "admin@example.com", "password": password},
        )
        assert reply.status_code == 200, reply.text
        return str(reply.json()["access_token"])
