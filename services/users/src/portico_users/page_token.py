"""ListUsers' opaque ``page_token`` values (format and checks: :mod:`portico_common.page_token`)."""

from __future__ import annotations

from portico_common.page_token import CursorTokens
from portico_users.domain import Cursor

PAGE_TOKENS = CursorTokens(Cursor, person=b"portico.users", listing="ListUsers")
