"""The committed OpenAPI document (``docs/api/openapi.json``) is the one the gateway serves.

Reviewers read API changes in its diff, and the client generators (``make clients``) read it:
a stale copy would hide a change from both. ``make openapi`` rewrites it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from portico_gateway.app import openapi_text

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "docs" / "api" / "openapi.json"
STALE = "docs/api/openapi.json is stale: run `make openapi` and commit it"


async def test_the_committed_document_is_the_served_one(http: httpx.AsyncClient) -> None:
    served = (await http.get("/openapi.json")).json()
    assert served == json.loads(COMMITTED.read_text()), STALE


def test_the_committed_document_is_written_as_make_openapi_writes_it() -> None:
    assert COMMITTED.read_text() == openapi_text(), STALE


def test_portico_gateway_prints_the_document() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "portico_gateway", "--openapi"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PATH": "/usr/bin:/bin", "GATEWAY_PORT": "not a port"},  # settings play no part
    )
    assert printed.stdout == openapi_text()
