"""The auth service's domain objects: plain dataclasses that need neither gRPC nor SQL."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


class CredentialState(enum.StrEnum):
    """``pending``: sign-up under way, the user may not exist yet; ``active``: can log in."""

    PENDING = "pending"
    ACTIVE = "active"


@dataclass(frozen=True, slots=True)
class Credential:
    """A password credential as stored (``auth.credentials``)."""

    id: UUID
    user_id: UUID | None
    email: str
    display_name: str
    password_hash: str
    state: CredentialState
    idempotency_key: UUID
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UserRef:
    """What the auth service needs to know about a user of the users service."""

    id: UUID
    email: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """The result of a login or a refresh (RFC 6749 section 5.1)."""

    access_token: str
    expires_in: int
    refresh_token: str
    token_type: str = "Bearer"  # noqa: S105 - the RFC 6750 token type, not a secret
    scope: str = ""
