"""Opaque ``page_token`` values for ListAuditEvents' keyset pagination (format and checks:
:mod:`portico_common.page_token`, cursor ``(recorded_at, id)``)."""

from __future__ import annotations

from portico_audit.domain import Cursor
from portico_common.page_token import PageTokens

_TOKENS = PageTokens(person=b"portico.audit", listing="ListAuditEvents")


def encode_page_token(cursor: Cursor) -> str:
    """The token that resumes a listing right after ``cursor``."""
    return _TOKENS.encode(cursor.recorded_at, cursor.id)


def decode_page_token(token: str) -> Cursor | None:
    """The cursor in ``token``; None for the empty token; INVALID_ARGUMENT for a foreign one."""
    return _TOKENS.cursor(token, Cursor)
