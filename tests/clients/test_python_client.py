"""The generated Python client (``clients/python/portico-client``) walks through the API."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.clients.checks import check_walkthrough
from tests.clients.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, ROOT
from tests.e2e.conftest import Stack

PACKAGE_ROOT = ROOT / "clients" / "python" / "portico-client"
WALKTHROUGH = ROOT / "clients" / "python" / "walkthrough.py"


@pytest.fixture(scope="module")
def walkthrough(document: dict[str, Any]) -> Iterator[Any]:
    """``clients/python/walkthrough.py``, importing the generated ``portico_client``."""
    sys.path.insert(0, str(PACKAGE_ROOT))
    try:
        spec = importlib.util.spec_from_file_location("portico_client_walkthrough", WALKTHROUGH)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("portico_client_walkthrough", None)
        sys.path.remove(str(PACKAGE_ROOT))


def test_the_python_client_walks_through_the_api(
    walkthrough: Any, stack: Stack, admin: httpx.Client, document: dict[str, Any]
) -> None:
    summary = walkthrough.walkthrough(
        stack.base_url, admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD
    )
    check_walkthrough(dataclasses.asdict(summary), document, admin)


def test_a_problem_is_a_typed_value(walkthrough: Any, stack: Stack, admin: httpx.Client) -> None:
    """An error answer parses into the generated ``Problem`` model, field errors included."""
    from portico_client import AuthenticatedClient

    token = admin.headers["authorization"].removeprefix("Bearer ")
    with AuthenticatedClient(base_url=stack.base_url, token=token) as client:
        _read_problems(client)


def _read_problems(client: Any) -> None:
    from portico_client.api.users import create_user, get_user
    from portico_client.models import CreateUserRequest, Problem, ProblemErrorsItem

    missing = get_user.sync_detailed(uuid.uuid4(), client=client)
    assert isinstance(missing.parsed, Problem), missing.content
    assert (missing.parsed.status, int(missing.status_code)) == (404, 404)
    assert missing.parsed.request_id == missing.headers["x-request-id"]

    invalid = create_user.sync_detailed(
        client=client, body=CreateUserRequest(email="not-an-email", display_name="X")
    )
    assert isinstance(invalid.parsed, Problem), invalid.content
    assert invalid.parsed.status == 400
    errors = invalid.parsed.errors
    assert isinstance(errors, list)
    assert all(isinstance(e, ProblemErrorsItem) for e in errors)
    assert [e.field for e in errors] == ["email"]
