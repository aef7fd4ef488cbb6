"""Opaque ``page_token`` values for keyset pagination over ``(timestamp, uuid)`` cursors.

A token is URL-safe base64 (no padding) of::

    version (1 byte, = 1) | timestamp (int64, microseconds since the Unix epoch, big-endian)
    | id (16 bytes) | checksum (first 8 bytes of BLAKE2b, personalised per listing)

The checksum catches truncated, edited and hand-made tokens (it is not a signature: a client
that forges a valid cursor can only skip ahead in a list it may read anyway), and its
personalisation keeps one listing's tokens from being accepted by another. Anything that does
not decode to exactly this shape raises :class:`InvalidPageToken`; :meth:`PageTokens.cursor`
turns that into the listing's INVALID_ARGUMENT on ``page_token``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import re
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar
from uuid import UUID

from portico_common.errors import InvalidArgument

C = TypeVar("C")

_VERSION = 1
_BODY = struct.Struct(">Bq16s")
_CHECKSUM_SIZE = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


class InvalidPageToken(ValueError):  # noqa: N818 (the condition; services map it to INVALID_ARGUMENT)
    """The token was not made by :meth:`PageTokens.encode` of this listing."""


class PageTokens:
    """Encodes and decodes the tokens of one listing (``person``: at most 16 bytes; ``listing``:
    the RPC, named in the error a bad token gets)."""

    def __init__(self, person: bytes, *, listing: str = "list") -> None:
        self._person = person
        self._listing = listing

    def _checksum(self, body: bytes) -> bytes:
        return hashlib.blake2b(body, digest_size=_CHECKSUM_SIZE, person=self._person).digest()

    def encode(self, at: datetime, id_: UUID) -> str:
        """The token that resumes a listing right after ``(at, id_)``."""
        micros = (at - _EPOCH) // timedelta(microseconds=1)
        body = _BODY.pack(_VERSION, micros, id_.bytes)
        return base64.urlsafe_b64encode(body + self._checksum(body)).rstrip(b"=").decode("ascii")

    def decode(self, token: str) -> tuple[datetime, UUID] | None:
        """The cursor in ``token``; None for the empty token (the first page)."""
        if not token:
            return None
        if not _ALPHABET.fullmatch(token):
            raise InvalidPageToken(token)
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise InvalidPageToken(token) from None
        if len(raw) != _BODY.size + _CHECKSUM_SIZE:
            raise InvalidPageToken(token)
        body, checksum = raw[: _BODY.size], raw[_BODY.size :]
        if not hmac.compare_digest(checksum, self._checksum(body)):
            raise InvalidPageToken(token)
        version, micros, id_bytes = _BODY.unpack(body)
        if version != _VERSION:
            raise InvalidPageToken(token)
        try:
            at = _EPOCH + timedelta(microseconds=micros)
        except OverflowError:
            raise InvalidPageToken(token) from None
        id_ = UUID(bytes=id_bytes)
        if self.encode(at, id_) != token:  # non-canonical base64 (e.g. altered padding bits)
            raise InvalidPageToken(token)
        return at, id_

    def cursor(self, token: str, make: Callable[[datetime, UUID], C]) -> C | None:
        """``make(timestamp, id)`` of the cursor in ``token``; None for the empty token (the
        first page); ``InvalidArgument`` on ``page_token`` for anything this listing did not
        issue."""
        try:
            decoded = self.decode(token)
        except InvalidPageToken:
            raise InvalidArgument.for_field(
                "page_token",
                f"must be a next_page_token returned by a previous {self._listing} call",
            ) from None
        return None if decoded is None else make(*decoded)


class CursorTokens(Generic[C]):
    """The page tokens of one listing whose cursor is a ``(timestamp, id)`` dataclass."""

    def __init__(self, cursor_type: type[C], *, person: bytes, listing: str) -> None:
        self._tokens = PageTokens(person, listing=listing)
        self._cursor_type = cursor_type

    def encode(self, cursor: C) -> str:
        """The token that resumes the listing right after ``cursor``."""
        at, id_ = (getattr(cursor, f.name) for f in dataclasses.fields(cursor))  # type: ignore[arg-type]
        return self._tokens.encode(at, id_)

    def decode(self, token: str) -> C | None:
        """The cursor in ``token``; None for the empty token; INVALID_ARGUMENT for a foreign one."""
        return self._tokens.cursor(token, self._cursor_type)
