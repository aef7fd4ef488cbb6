"""The users service's errors: the shared tree of :mod:`portico_common.errors`, plus its own.

::

    ServiceError (DomainError here)  INTERNAL             base class; never raised directly
    ├── NotFound                     NOT_FOUND            no user with that id
    ├── AlreadyExists                ALREADY_EXISTS       the email belongs to another user
    ├── InvalidArgument              INVALID_ARGUMENT     FieldViolation items (BadRequest)
    ├── FailedPrecondition           FAILED_PRECONDITION  may carry an ErrorInfo ``reason``
    │   └── EtagMismatch                                  reason ETAG_MISMATCH (412 via REST)
    ├── Unavailable                  UNAVAILABLE          PostgreSQL cannot be reached
    └── DeadlineExceeded             DEADLINE_EXCEEDED    the deadline ran out in a database call

The repository and the codec raise these; the runtime's error interceptor turns them into a
gRPC status (ErrorInfo in :data:`ERROR_DOMAIN`), exactly once.
"""

from __future__ import annotations

from portico_common import errors
from portico_common.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from portico_common.errors import ServiceError as DomainError

__all__ = [
    "ERROR_DOMAIN",
    "AlreadyExists",
    "DeadlineExceeded",
    "DomainError",
    "EtagMismatch",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "Unavailable",
]

#: ``google.rpc.ErrorInfo.domain`` of the errors this service reports.
ERROR_DOMAIN = "users.portico.dev"


class EtagMismatch(FailedPrecondition):
    """The request's etag is not the user's current one: someone changed it meanwhile."""

    reason = "ETAG_MISMATCH"

    def __init__(self) -> None:
        super().__init__("the etag does not match the user's current version")


class Unavailable(errors.Unavailable):
    """PostgreSQL cannot be reached right now; the call may be retried."""

    def __init__(self, message: str = "the user store is unavailable, try again later") -> None:
        super().__init__(message)
