"""Opaque ``page_token`` values for ListAuditEvents' keyset pagination.

A token is URL-safe base64 (no padding) of::

    version (1 byte, = 1) | recorded_at (int64, microseconds since the Unix epoch, big-endian)
    | id (16 bytes) | checksum (first 8 bytes of BLAKE2b over what precedes it)

The checksum catches truncated, edited and hand-made tokens (it is not a signature: a client
that forges a valid cursor can only skip ahead in a list it may read anyway). Anything that does
not decode to exactly this shape is INVALID_ARGUMENT on ``page_token``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from datetime import UTC, datetime, timedelta
from uuid import UUID

from portico_audit.domain import Cursor
from portico_audit.errors import InvalidArgument

_VERSION = 1
_BODY = struct.Struct(">Bq16s")
_CHECKSUM_SIZE = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
_FIELD = "page_token"


def _checksum(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=_CHECKSUM_SIZE, person=b"portico.audit").digest()


def encode_page_token(cursor: Cursor) -> str:
    """The token that resumes a listing right after ``cursor``."""
    micros = (cursor.recorded_at - _EPOCH) // timedelta(microseconds=1)
    body = _BODY.pack(_VERSION, micros, cursor.id.bytes)
    return base64.urlsafe_b64encode(body + _checksum(body)).rstrip(b"=").decode("ascii")


def decode_page_token(token: str) -> Cursor | None:
    """The cursor in ``token``; None for the empty token (the first page).

    Raises ``InvalidArgument`` (field ``page_token``) for anything this module did not produce.
    """
    if not token:
        return None
    invalid = InvalidArgument.for_field(
        _FIELD, "must be a next_page_token returned by a previous ListAuditEvents call"
    )
    if not _ALPHABET.fullmatch(token):
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise invalid from None
    if len(raw) != _BODY.size + _CHECKSUM_SIZE:
        raise invalid
    body, checksum = raw[: _BODY.size], raw[_BODY.size :]
    if not hmac.compare_digest(checksum, _checksum(body)):
        raise invalid
    version, micros, id_bytes = _BODY.unpack(body)
    if version != _VERSION:
        raise invalid
    try:
        recorded_at = _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise invalid from None
    cursor = Cursor(recorded_at=recorded_at, id=UUID(bytes=id_bytes))
    if encode_page_token(cursor) != token:  # non-canonical base64 (e.g. altered padding bits)
        raise invalid
    return cursor
