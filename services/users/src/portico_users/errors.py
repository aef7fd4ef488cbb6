"""The users service's domain errors: one tree, each class carrying the gRPC code it maps to.

::

    DomainError             INTERNAL             base class; never raised directly
    ├── NotFound            NOT_FOUND            no user with that id
    ├── AlreadyExists       ALREADY_EXISTS       the email belongs to another user
    ├── InvalidArgument     INVALID_ARGUMENT     FieldViolation items (google.rpc.BadRequest)
    ├── FailedPrecondition  FAILED_PRECONDITION  may carry an ErrorInfo ``reason``
    │   └── EtagMismatch                         reason ETAG_MISMATCH (the gateway answers 412)
    ├── Unavailable         UNAVAILABLE          PostgreSQL cannot be reached; retry later
    └── DeadlineExceeded    DEADLINE_EXCEEDED    the deadline ran out during a database call

The names follow the gRPC codes they map to, hence no ``Error`` suffix (ruff N818 is waived).

The repository and the codec raise these; the error interceptor turns them into a gRPC status,
exactly once. Every message is written for the client: it never contains SQL, connection
details or tracebacks (those go to the server log, from the exception's ``__cause__``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from grpc import StatusCode

#: ``google.rpc.ErrorInfo.domain`` of the errors this service reports.
ERROR_DOMAIN = "users.portico.dev"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field: ``field`` is the dotted proto path (``user.display_name``)."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error this service reports to its callers."""

    grpc_code: ClassVar[StatusCode] = StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):  # noqa: N818
    """The user does not exist (or no longer does)."""

    grpc_code = StatusCode.NOT_FOUND


class AlreadyExists(DomainError):  # noqa: N818
    """Another user already has that email (compared case-insensitively)."""

    grpc_code = StatusCode.ALREADY_EXISTS


class InvalidArgument(DomainError):  # noqa: N818
    """The request is malformed; ``violations`` says which fields and why."""

    grpc_code = StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Iterable[FieldViolation], message: str | None = None) -> None:
        self.violations = tuple(violations)
        fields = ", ".join(dict.fromkeys(v.field for v in self.violations))
        super().__init__(message or f"invalid request: {fields}")

    @classmethod
    def for_field(cls, field: str, description: str) -> InvalidArgument:
        """An error with a single violation."""
        return cls([FieldViolation(field, description)])


class FailedPrecondition(DomainError):  # noqa: N818
    """The system is not in the state the request requires; ``reason`` names which state."""

    grpc_code = StatusCode.FAILED_PRECONDITION
    reason: ClassVar[str | None] = None


class EtagMismatch(FailedPrecondition):
    """The request's etag is not the user's current one: someone changed it meanwhile."""

    reason = "ETAG_MISMATCH"

    def __init__(self) -> None:
        super().__init__("the etag does not match the user's current version")


class Unavailable(DomainError):  # noqa: N818
    """PostgreSQL cannot be reached right now; the call may be retried."""

    grpc_code = StatusCode.UNAVAILABLE

    def __init__(self, message: str = "the user store is unavailable, try again later") -> None:
        super().__init__(message)


class DeadlineExceeded(DomainError):  # noqa: N818
    """The caller's deadline (or the query time limit) ran out during a database call."""

    grpc_code = StatusCode.DEADLINE_EXCEEDED

    def __init__(
        self, message: str = "the deadline expired before the operation completed"
    ) -> None:
        super().__init__(message)
