"""The audit service's errors: the shared tree of :mod:`portico_common.errors`.

::

    ServiceError (DomainError here)  INTERNAL             base class; never raised directly
    ├── InvalidArgument              INVALID_ARGUMENT     FieldViolation items (BadRequest)
    ├── Unavailable                  UNAVAILABLE          PostgreSQL cannot be reached
    └── DeadlineExceeded             DEADLINE_EXCEEDED    the deadline ran out in a database call

Every message is written for the client: no SQL, connection details or tracebacks.
"""

from __future__ import annotations

from portico_common import errors
from portico_common.errors import DeadlineExceeded, FieldViolation, InvalidArgument
from portico_common.errors import ServiceError as DomainError

__all__ = [
    "ERROR_DOMAIN",
    "DeadlineExceeded",
    "DomainError",
    "FieldViolation",
    "InvalidArgument",
    "Unavailable",
]

#: ``google.rpc.ErrorInfo.domain`` of the errors this service reports.
ERROR_DOMAIN = "audit.portico.dev"


class Unavailable(errors.Unavailable):
    """PostgreSQL cannot be reached right now; the call may be retried."""

    def __init__(self, message: str = "the audit store is unavailable, try again later") -> None:
        super().__init__(message)
