"""The auth service's errors: the shared tree of :mod:`portico_common.errors`, worded for it.

::

    ServiceError (DomainError here)  INTERNAL             base class; never raised directly
    ├── AlreadyExists                ALREADY_EXISTS       the email belongs to another user
    ├── InvalidArgument              INVALID_ARGUMENT     FieldViolation items (BadRequest)
    ├── Unauthenticated              UNAUTHENTICATED      bad credentials, bad/expired/reused tokens
    ├── ResourceExhausted            RESOURCE_EXHAUSTED   throttled; ``retry_after_s`` (RetryInfo)
    ├── Aborted                      ABORTED              a concurrent attempt got in the way
    ├── Unavailable                  UNAVAILABLE          PostgreSQL, Valkey or users is down
    └── DeadlineExceeded             DEADLINE_EXCEEDED    the deadline ran out in a backend call

Every message is written for the client: never SQL, connection details, tracebacks, or
anything that tells an unknown account from a wrong password.
"""

from __future__ import annotations

from portico_common import errors
from portico_common.errors import (
    Aborted,
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    Unauthenticated,
)
from portico_common.errors import ServiceError as DomainError

__all__ = [
    "BAD_CREDENTIALS",
    "BAD_REFRESH_TOKEN",
    "ERROR_DOMAIN",
    "Aborted",
    "AlreadyExists",
    "DeadlineExceeded",
    "DomainError",
    "FieldViolation",
    "InvalidArgument",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
]

#: ``google.rpc.ErrorInfo.domain`` of the errors this service reports.
ERROR_DOMAIN = "auth.portico.dev"

#: The one message for an unknown username and a wrong password alike.
BAD_CREDENTIALS = "invalid username or password"
#: The one message for a refresh token that is unknown, expired, spent or revoked.
BAD_REFRESH_TOKEN = "invalid refresh token"  # noqa: S105 - a message, not a secret


class AlreadyExists(errors.AlreadyExists):
    """Another account already has that email (compared case-insensitively)."""

    def __init__(self, message: str = "a user with this email already exists") -> None:
        super().__init__(message)


class ResourceExhausted(errors.ResourceExhausted):
    """Too many login attempts; ``retry_after_s`` says when to try again."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(retry_after_s, "too many login attempts, try again later")


class Unavailable(errors.Unavailable):
    """PostgreSQL, Valkey or the users service cannot be reached; the call may be retried."""

    def __init__(self, message: str = "the auth service is unavailable, try again later") -> None:
        super().__init__(message)
