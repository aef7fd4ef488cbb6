"""Opaque ``page_token`` values for ListUsers' keyset pagination (format and checks:
:mod:`portico_common.page_token`, cursor ``(created_at, id)``)."""

from __future__ import annotations

from portico_common.page_token import PageTokens
from portico_users.domain import Cursor

_TOKENS = PageTokens(person=b"portico.users", listing="ListUsers")


def encode_page_token(cursor: Cursor) -> str:
    """The token that resumes a listing right after ``cursor``."""
    return _TOKENS.encode(cursor.created_at, cursor.id)


def decode_page_token(token: str) -> Cursor | None:
    """The cursor in ``token``; None for the empty token; INVALID_ARGUMENT for a foreign one."""
    return _TOKENS.cursor(token, Cursor)
