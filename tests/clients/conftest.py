"""The generated API clients (``make clients``) against the stack ``make run`` starts.

``make test-clients`` generates both clients from ``docs/api/openapi.json`` and runs this tier;
run by hand, it needs a ``make clients`` done after the document last changed (the stamp
``clients/.generated-from`` says from which document). One stack per session, as in the e2e
tier, or a deployed one with ``PORTICO_E2E_BASE_URL``.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack, admin_token, start_stack

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "api" / "openapi.json"
STAMP = ROOT / "clients" / ".generated-from"
ADMIN_EMAIL = "admin@example.com"  # in the dev stack's AUTH_ADMIN_EMAILS
ADMIN_PASSWORD = "dev admin password"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.clients)


@pytest.fixture(scope="session")
def document() -> dict[str, Any]:
    """The committed OpenAPI document, after checking the clients were generated from it."""
    digest = hashlib.sha256(DOCUMENT.read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text().split()[0] != digest:
        pytest.fail("the clients are missing or older than docs/api/openapi.json: `make clients`")
    loaded: dict[str, Any] = json.loads(DOCUMENT.read_text())
    return loaded


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if base_url := os.environ.get("PORTICO_E2E_BASE_URL"):
        yield Stack(base_url.rstrip("/"), os.environ.get("PORTICO_E2E_GRPC_TARGET", ""))
        return
    started = start_stack(tmp_path_factory.mktemp("stack") / ".data")
    try:
        yield started
    finally:
        if started.process is not None and started.process.poll() is None:
            code = started.stop()
            assert code == 0, "\n".join(started.output)


@pytest.fixture(scope="session")
def admin(stack: Stack) -> Iterator[httpx.Client]:
    """The dev admin's client (signed up if need be), with a few more users to page through."""
    with httpx.Client(
        base_url=stack.base_url,
        timeout=10,
        headers={"Authorization": f"Bearer {admin_token(stack)}"},
    ) as client:
        _crowd(client)
        yield client


def _crowd(client: httpx.Client) -> None:
    for _ in range(3):  # the walkthroughs list 2 a page: make sure there are several pages
        signed_up = client.post(
            "/v1/auth/signup",
            json={
                "email": f"crowd-{uuid.uuid4().hex[:12]}@example.com",
                "display_name": "Crowd",
                "password": uuid.uuid4().hex,
                "idempotency_key": str(uuid.uuid4()),
            },
        )
        assert signed_up.is_success, signed_up.text
