"""Opaque ``page_token`` values for ListAuditEvents' keyset pagination (format:
:mod:`portico_common.page_token`, cursor ``(recorded_at, id)``).

Anything the service did not issue is INVALID_ARGUMENT on ``page_token``.
"""

from __future__ import annotations

from portico_audit.domain import Cursor
from portico_audit.errors import InvalidArgument
from portico_common.page_token import InvalidPageToken, PageTokens

_TOKENS = PageTokens(person=b"portico.audit")


def encode_page_token(cursor: Cursor) -> str:
    """The token that resumes a listing right after ``cursor``."""
    return _TOKENS.encode(cursor.recorded_at, cursor.id)


def decode_page_token(token: str) -> Cursor | None:
    """The cursor in ``token``; None for the empty token (the first page)."""
    try:
        decoded = _TOKENS.decode(token)
    except InvalidPageToken:
        raise InvalidArgument.for_field(
            "page_token", "must be a next_page_token returned by a previous ListAuditEvents call"
        ) from None
    return None if decoded is None else Cursor(recorded_at=decoded[0], id=decoded[1])
