"""The generated TypeScript client (openapi-typescript + openapi-fetch) walks through the API.

``make clients`` compiled ``clients/typescript/walkthrough.ts`` with ``tsc`` (strict) against
the generated ``schema.d.ts``; node runs the result here and prints what it saw as JSON.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import httpx

from tests.clients.checks import check_walkthrough
from tests.clients.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, ROOT
from tests.e2e.conftest import Stack

COMPILED = ROOT / "clients" / "typescript" / "dist" / "walkthrough.js"


def test_the_typescript_client_walks_through_the_api(
    stack: Stack, admin: httpx.Client, document: dict[str, Any]
) -> None:
    node = shutil.which("node")
    assert node is not None, "the TypeScript client needs node (and `make clients`)"
    ran = subprocess.run(
        [node, str(COMPILED), stack.base_url, ADMIN_EMAIL, ADMIN_PASSWORD],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    check_walkthrough(json.loads(ran.stdout), document, admin)
