"""ListAuditEvents' opaque ``page_token`` values (format: :mod:`portico_common.page_token`)."""

from __future__ import annotations

from portico_audit.domain import Cursor
from portico_common.page_token import CursorTokens

PAGE_TOKENS = CursorTokens(Cursor, person=b"portico.audit", listing="ListAuditEvents")
