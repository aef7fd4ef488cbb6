"""Page tokens: round trip, and rejection of anything the service did not issue."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from uuid import UUID

import pytest

from portico_users.domain import Cursor
from portico_users.errors import InvalidArgument
from portico_users.page_token import PAGE_TOKENS

# A fixed cursor: every tampered variant below must differ from the real token on every run.
CURSOR = Cursor(
    datetime(2024, 5, 17, 12, 30, 1, 123456, tzinfo=UTC),
    UUID("0b7e4a52-6a8e-4f1c-9c3e-2f5d1a7b9c01"),
)


def test_a_token_decodes_to_its_cursor() -> None:
    token = PAGE_TOKENS.encode(CURSOR)

    assert PAGE_TOKENS.decode(token) == CURSOR
    assert token.isascii()
    assert "=" not in token


def test_the_empty_token_means_the_first_page() -> None:
    assert PAGE_TOKENS.decode("") is None


def test_cursors_before_the_epoch_round_trip() -> None:
    cursor = Cursor(datetime(1901, 1, 1, tzinfo=UTC), UUID(int=1))

    assert PAGE_TOKENS.decode(PAGE_TOKENS.encode(cursor)) == cursor


def _other_tail(token: str) -> str:
    """``token`` with its last character replaced by a different one."""
    return token[:-1] + ("B" if token[-1] != "B" else "C")


def _flip(token: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=="))
    raw[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("not a token", id="bad-alphabet"),
        pytest.param("AAAA", id="too-short"),
        pytest.param(PAGE_TOKENS.encode(CURSOR)[:-2], id="truncated"),
        pytest.param(PAGE_TOKENS.encode(CURSOR) + "AA", id="extended"),
        pytest.param(_flip(PAGE_TOKENS.encode(CURSOR), 3), id="tampered-time"),
        pytest.param(_flip(PAGE_TOKENS.encode(CURSOR), 12), id="tampered-id"),
        pytest.param(_flip(PAGE_TOKENS.encode(CURSOR), 30), id="tampered-checksum"),
        pytest.param(_flip(PAGE_TOKENS.encode(CURSOR), 0), id="unknown-version"),
        pytest.param(_other_tail(PAGE_TOKENS.encode(CURSOR)), id="altered-tail"),
        pytest.param("é" * 10, id="non-ascii"),
    ],
)
def test_foreign_tokens_are_invalid_argument_on_page_token(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        PAGE_TOKENS.decode(token)

    assert [v.field for v in caught.value.violations] == ["page_token"]
