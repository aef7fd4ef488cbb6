"""Serve the whole stack from the built images and use it as a client would.

``make images`` (k8s/tools/images.sh) runs this after building: ``portico-dev --images`` runs the
migrations image against an embedded PostgreSQL, then the users, auth and audit images (each
until its gRPC health check answers SERVING) and the gateway image (until ``/readyz`` answers
200), every container read-only, without capabilities, as its image's user. Then, through the
gateway container only: sign up (201), log in (200), read oneself (200, the same id), and as an
admin find the sign-up's ``user.created`` audit event (outbox → stream → audit consumer, all in
containers). Then SIGINT: every container drains and exits 0, and none is left behind.

Usage: image_stack.py REFERENCE LOG, REFERENCE as for ``portico-dev --images`` (with ``{name}``).
Prints one line per check; exit status 0 only if every check passed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

READY_TIMEOUT_S = 240.0  # five containers started one after the other on a busy 2-core machine
AUDIT_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 120.0
ADMIN = "admin@example.com"  # portico-dev's default AUTH_ADMIN_EMAILS


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Stack:
    """``portico-dev --images`` as a child process; its output goes to ``log``."""

    def __init__(self, reference: str, log: Path, data_dir: Path) -> None:
        self.port = _free_port()
        env = os.environ | {
            "PORTICO_DEV_IMAGES": reference,
            "PORTICO_DEV_DATA_DIR": str(data_dir),
            "PORTICO_DEV_GATEWAY_PORT": str(self.port),
            "PORTICO_DEV_USERS_PORT": str(_free_port()),
            "PORTICO_DEV_AUTH_PORT": str(_free_port()),
            "PORTICO_DEV_AUDIT_PORT": str(_free_port()),
            "PORTICO_DEV_USERS_METRICS_PORT": "0",
            "PORTICO_DEV_AUTH_METRICS_PORT": "0",
            "PORTICO_DEV_AUDIT_METRICS_PORT": "0",
            "PORTICO_DEV_READY_TIMEOUT_S": str(READY_TIMEOUT_S),
            "PORTICO_DEV_ADMIN_EMAIL": ADMIN,
        }
        launcher = Path(sys.executable).with_name("portico-dev")
        self._log = log.open("w")
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            [str(launcher)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout or ():
            self._log.write(line)
            self._log.flush()
            if "| ready in " in line:
                self.ready.set()

    def wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S + 30
        while time.monotonic() < deadline and self.process.poll() is None:
            if self.ready.wait(0.5):
                return True
        return False

    def stop(self) -> int | None:
        """SIGINT (as Ctrl-C), then the launcher's exit status (None: it had to be killed)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code: int | None = self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGINT)  # a second Ctrl-C kills the children
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            code = None
        self._reader.join(5)
        self._log.close()
        return code


def _flow(base: str) -> list[tuple[str, bool, str]]:
    """The client's calls, through the gateway container; one (check, passed, detail) each."""
    checks: list[tuple[str, bool, str]] = []
    email = f"image-{uuid.uuid4().hex[:12]}@example.com"
    password = "correct horse battery staple"  # noqa: S105 - a test user's, made here
    with httpx.Client(base_url=base, timeout=30) as client:

        def sign_up(address: str) -> httpx.Response:
            body = {"email": address, "display_name": "Image check", "password": password}
            return client.post("/v1/auth/signup", json=body)

        def token(address: str) -> str:
            form = {"grant_type": "password", "username": address, "password": password}
            answer = client.post("/v1/auth/token", data=form)
            return str(answer.json()["access_token"]) if answer.status_code == 200 else ""

        created = sign_up(email)
        user_id = created.json().get("user_id", "") if created.status_code == 201 else ""
        checks.append(("POST /v1/auth/signup", bool(user_id), f"{created.status_code}"))
        access = token(email)
        checks.append(("POST /v1/auth/token", bool(access), "200" if access else "no token"))
        me = client.get("/v1/users/me", headers={"authorization": f"Bearer {access}"})
        same = me.status_code == 200 and me.json().get("id") == user_id
        checks.append(("GET /v1/users/me", same, f"{me.status_code}"))
        sign_up(ADMIN)  # 201, or 409 when the data folder already had one
        admin = token(ADMIN)
        found = _poll(
            lambda: client.get(
                "/v1/audit/events",
                params={"subject": user_id, "type": "user.created"},
                headers={"authorization": f"Bearer {admin}"},
            ),
            lambda answer: answer.status_code == 200 and bool(answer.json().get("events")),
        )
        checks.append(("GET /v1/audit/events (user.created)", found, "found" if found else "none"))
    return checks


def _poll(call: Callable[[], httpx.Response], good: Callable[[httpx.Response], bool]) -> bool:
    deadline = time.monotonic() + AUDIT_TIMEOUT_S
    while time.monotonic() < deadline:
        if good(call()):
            return True
        time.sleep(0.5)
    return False


def _left_behind(podman: str) -> list[str]:
    listed = subprocess.run(
        [podman, "ps", "--all", "--format", "{{.Names}}", "--filter", "name=^portico-dev-"],
        capture_output=True,
        text=True,
        check=False,
    )
    return listed.stdout.split()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    reference, log = argv[0], Path(argv[1])
    podman = os.environ.get("PORTICO_DEV_PODMAN", "podman")
    data_dir = Path(tempfile.mkdtemp(prefix="portico-image-stack-"))
    data_dir.chmod(0o755)  # as root, the embedded PostgreSQL runs as a user of its own
    checks: list[tuple[str, bool, str]] = []
    started = time.monotonic()
    stack = Stack(reference, log, data_dir)
    try:
        ready = stack.wait_ready()
        checks.append(
            (
                "stack from the images ready (migrations applied; users, auth, audit gRPC "
                "health SERVING; gateway /readyz 200)",
                ready,
                f"{time.monotonic() - started:.1f} s" if ready else f"not ready: see {log}",
            )
        )
        if ready:
            checks += _flow(f"http://127.0.0.1:{stack.port}")
    except httpx.HTTPError as exc:
        checks.append(("client calls", False, f"{type(exc).__name__}: {exc}"))
    finally:
        code = stack.stop()
        checks.append(("every container drained and exited 0", code == 0, f"exit {code}"))
        left = _left_behind(podman)
        checks.append(("no container left behind", not left, ", ".join(left) or "none"))
        shutil.rmtree(data_dir, ignore_errors=True)
    for name, passed, detail in checks:
        print(f"{'ok  ' if passed else 'FAIL'} {name}: {detail}")
    return 0 if all(passed for _, passed, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
