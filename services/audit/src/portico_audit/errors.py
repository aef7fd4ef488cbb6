"""The audit service's errors: one tree, each class carrying the gRPC code it maps to.

::

    DomainError             INTERNAL             base class; never raised directly
    ├── InvalidArgument     INVALID_ARGUMENT     FieldViolation items (google.rpc.BadRequest)
    ├── Unavailable         UNAVAILABLE          PostgreSQL cannot be reached; retry later
    └── DeadlineExceeded    DEADLINE_EXCEEDED    the deadline ran out during a database call

Every message is written for the client: no SQL, connection details or tracebacks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from grpc import StatusCode


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field: ``field`` is the dotted proto path."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error this service reports to its callers."""

    grpc_code: ClassVar[StatusCode] = StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):  # noqa: N818 (named after the status it maps to)
    """The request is malformed; ``violations`` says which fields and why."""

    grpc_code = StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Iterable[FieldViolation]) -> None:
        self.violations = tuple(violations)
        fields = ", ".join(dict.fromkeys(v.field for v in self.violations))
        super().__init__(f"invalid request: {fields}")

    @classmethod
    def for_field(cls, field: str, description: str) -> InvalidArgument:
        """An error with a single violation."""
        return cls([FieldViolation(field, description)])


class Unavailable(DomainError):  # noqa: N818
    """PostgreSQL cannot be reached right now; the call may be retried."""

    grpc_code = StatusCode.UNAVAILABLE

    def __init__(self, message: str = "the audit store is unavailable, try again later") -> None:
        super().__init__(message)


class DeadlineExceeded(DomainError):  # noqa: N818
    """The caller's deadline (or the query time limit) ran out during a database call."""

    grpc_code = StatusCode.DEADLINE_EXCEEDED

    def __init__(
        self, message: str = "the deadline expired before the operation completed"
    ) -> None:
        super().__init__(message)
