"""JSON bodies nested deeper than the parser goes: a 400 saying so, never a 500 (issue 14, item 3).

Within the body size limit a JSON document can nest tens of thousands of levels, deeper than
Python's parser recurses; the gateway answers 400 whether the nesting is at the top, in a known
field, or in an unknown one.
"""

from __future__ import annotations

import httpx
import pytest

from tests.integration.hostile.support import refused
from tests.support.security import People, authorization

DEPTH = 50_000


def deep(depth: int = DEPTH) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "body",
    [
        deep(),
        '{"email":' + deep() + "}",
        '{"nope":' + '{"a":' * DEPTH + "1" + "}" * DEPTH + "}",
    ],
    ids=["top-level", "in-a-field", "objects-in-an-unknown-field"],
)
async def test_deeply_nested_sign_up_body_is_a_400(api: httpx.AsyncClient, body: str) -> None:
    response = await api.post(
        "/v1/auth/signup", content=body, headers={"Content-Type": "application/json"}
    )
    assert "nested too deeply" in refused(response, 400)["detail"]


async def test_deeply_nested_patch_body_is_a_400(api: httpx.AsyncClient, people: People) -> None:
    headers = authorization(people.self.access_token) | {"Content-Type": "application/json"}
    response = await api.patch(
        f"/v1/users/{people.self.user_id}",
        content='{"display_name":' + deep() + "}",
        headers=headers,
    )
    assert "nested too deeply" in refused(response, 400)["detail"]
